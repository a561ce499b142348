"""Model bundles: a folder with ``weights.safetensors`` and ``manifest.json``.

The manifest records the architecture and its options (plain JSON values passed to
``networks.build``), the input sequences and their order, the label scheme, normalisation,
patch size, postprocessing defaults, training data and metrics, and the sha256 of the weights.
Loading verifies the hash before reading the weights and never executes code from a file:
safetensors holds tensors only, and the manifest is JSON. Weights may be stored in half precision
(``weights_storage: float16``, half the size on disk); they are loaded into the network's fp32
parameters, so computing stays in fp32.

An ensemble is a folder with only ``manifest.json`` (format ``braintumorseg-ensemble/1``) naming
its members, bundles whose probabilities ``segment`` averages: :func:`load_models` loads them,
:func:`save_ensemble` writes one. A member is looked for beside the ensemble first, then by name.

Bundles are looked up by path, or by name in ``$BRAINTUMORSEG_MODELS`` (colon-separated
folders), ``~/.braintumorseg/models`` and the package's own ``models`` folder.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

from ..errors import InputError, PathLike
from ..labels import SCHEMES
from ..predict import output_kinds
from ..read.cases import SEQUENCES  # the names a manifest's in_sequences normally holds
from ..segment_options import WINDOWS

if TYPE_CHECKING:  # torch loads only when a model does: listing bundles stays light (Slicer's model list)
    import torch

    from ..networks import SegmentationNetwork


FORMAT = "braintumorseg-bundle/1"


ENSEMBLE_FORMAT = "braintumorseg-ensemble/1"


WEIGHTS = "weights.safetensors"


MANIFEST = "manifest.json"
RUN_BUNDLE = "model"  # the bundle a training run exports, a folder inside its run folder


# the 2 mm all-grade design trained on every case (stage 1 a weight average of two of its trainings), its
# enhancing tumor refined at 1 mm (recipes.brats_glioma, models.averaging)
DEFAULT_MODEL = "brats-glioma-cascade-et-v9-all"


_REQUIRED = ("format", "id", "network", "options", "in_sequences", "label_scheme", "output_kind",
             "patch_size", "weights_sha256")


def shipped_models_dir() -> str:
    """The bundles shipped inside the package (package data of the wheel, and installed beside
    the library by the Slicer extension)."""
    return os.path.dirname(os.path.abspath(__file__))  # the weights lie beside this module


def search_dirs() -> List[str]:
    """Where bundles are looked for, in order: ``$BRAINTUMORSEG_MODELS`` folders,
    ``~/.braintumorseg/models``, the package's ``models`` folder."""
    dirs = [d for d in os.environ.get("BRAINTUMORSEG_MODELS", "").split(os.pathsep) if d]
    return dirs + [os.path.join(os.path.expanduser("~"), ".braintumorseg", "models"), shipped_models_dir()]


def installed_folders() -> List[Tuple[str, str]]:
    """(name, folder) of every bundle or ensemble in the search folders, the first found winning per
    name; dot-folders (a write that was interrupted, see ``write_folder``) left out."""
    seen, found = set(), []
    for d in search_dirs():
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            folder = os.path.join(d, name)
            if name not in seen and not name.startswith(".") and os.path.exists(os.path.join(folder, MANIFEST)):
                seen.add(name)
                found.append((name, folder))
    return found


def user_models_dir() -> str:
    """Where new models are registered: the first folder searched."""
    return search_dirs()[0]


def sha256_of(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Manifest:
    """A bundle's manifest, typed: the fields the library acts on, checked once (:meth:`from_json`).
    The whole document (training record, metrics, citations, licence...) stays in ``document``."""

    id: str
    network: str
    options: Dict[str, Any]
    in_sequences: Tuple[str, ...]
    label_scheme: str
    output_kind: str
    patch_size: Tuple[int, int, int]
    weights_sha256: str
    version: Optional[str] = None
    demo: bool = False
    spacing_mm: Optional[float] = None        # preprocessing.spacing_mm: the working grid it was trained on
    postprocessing: Dict[str, Any] = field(default_factory=dict)
    window: str = "patch"                     # where it runs by default: its patch's sliding windows or "whole"
    note: Optional[str] = None
    document: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: PathLike = MANIFEST) -> "Manifest":
        """Check the format and the types of the fields the library uses; one-line errors name ``source``."""
        src = os.fspath(source)
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise InputError(src, f"lacks {', '.join(missing)}")
        if data["format"] != FORMAT:
            raise InputError(src, f"has format {data['format']!r}; this version reads {FORMAT!r}")

        def bad(key: str, expected: str) -> InputError:
            return InputError(src, f"field {key} is {data.get(key)!r}; expected {expected}")

        seqs, patch = data["in_sequences"], data["patch_size"]
        if not isinstance(seqs, list) or not seqs or not all(isinstance(r, str) for r in seqs):
            raise bad("in_sequences", f"a list of sequence names ({', '.join(SEQUENCES)})")
        if not (isinstance(patch, list) and len(patch) == 3 and all(isinstance(v, int) and v > 0 for v in patch)):
            raise bad("patch_size", "three positive integers")
        if data["output_kind"] not in output_kinds.KINDS:
            raise bad("output_kind", " or ".join(output_kinds.KINDS))
        if data["label_scheme"] not in SCHEMES:
            raise bad("label_scheme", " or ".join(SCHEMES))
        if not isinstance(data["options"], dict):
            raise bad("options", "an object of network options")
        if not (isinstance(data["weights_sha256"], str) and re.fullmatch(r"[0-9a-f]{64}", data["weights_sha256"])):
            raise bad("weights_sha256", "64 hexadecimal digits")
        if data.get("window", "patch") not in WINDOWS[1:]:
            raise bad("window", " or ".join(WINDOWS[1:]))
        spacing = (data.get("preprocessing") or {}).get("spacing_mm")
        if spacing is not None and not (isinstance(spacing, (int, float)) and spacing > 0):
            raise InputError(src, f"field preprocessing.spacing_mm is {spacing!r}; expected a positive number or null")
        return cls(id=str(data["id"]), network=str(data["network"]), options=dict(data["options"]),
                   in_sequences=tuple(seqs), label_scheme=data["label_scheme"], output_kind=data["output_kind"],
                   patch_size=(patch[0], patch[1], patch[2]), weights_sha256=data["weights_sha256"],
                   version=data.get("version"), demo=bool(data.get("demo", False)),
                   spacing_mm=float(spacing) if spacing is not None else None,
                   postprocessing=dict(data.get("postprocessing") or {}), window=data.get("window", "patch"),
                   note=data.get("note"),
                   document=dict(data))

    def to_json(self) -> Dict[str, Any]:
        """The whole document, as written to ``manifest.json``."""
        return dict(self.document)

    @property
    def training_cases(self) -> Set[str]:
        """The case ids the model trained on (``training_data.train``); empty when none are listed."""
        data = self.document.get("training_data")
        ids = data.get("train") if isinstance(data, dict) else None
        return set(map(str, ids)) if isinstance(ids, list) else set()

    @property
    def output(self) -> output_kinds.OutputKind:
        return output_kinds.kind(self.output_kind)


@dataclass
class Bundle:
    path: str
    manifest: Manifest
    network: SegmentationNetwork

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def demo(self) -> bool:
        return self.manifest.demo


def resolve(model: PathLike) -> str:
    """Folder of a bundle given a path or a name."""
    m = os.fspath(model)
    if os.path.isdir(m) and os.path.exists(os.path.join(m, MANIFEST)):
        return m
    if os.sep not in m and "/" not in m:
        for d in search_dirs():
            cand = os.path.join(d, m)
            if os.path.exists(os.path.join(cand, MANIFEST)):
                return cand
    if os.path.isdir(m):
        raise InputError(m, f"is not a model bundle (no {MANIFEST})")
    close = difflib.get_close_matches(m, [name for name, _ in installed_folders()], n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise InputError(m, f"no such model ({hint}braintumorseg models lists them; looked in: "
                        + ", ".join(search_dirs()) + ")")


def read_json(path: PathLike) -> Any:
    """A JSON file's content; a file that cannot be read or is not JSON is an error naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from None
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from None


def read_document(folder: PathLike) -> Dict[str, Any]:
    """A model folder's ``manifest.json`` as a JSON object (bundle or ensemble)."""
    path = os.path.join(os.fspath(folder), MANIFEST)
    if not os.path.isfile(path):
        raise InputError(folder, f"is not a model bundle (no {MANIFEST})")
    manifest = read_json(path)
    if not isinstance(manifest, dict):
        raise InputError(path, "is not a JSON object")
    return manifest


def read_manifest(folder: PathLike) -> Manifest:
    """A bundle folder's manifest, format-checked (an ensemble's folder is an error naming its members)."""
    manifest = read_document(folder)
    path = os.path.join(os.fspath(folder), MANIFEST)
    if manifest.get("format") == ENSEMBLE_FORMAT:
        raise InputError(folder, f"is an ensemble of {', '.join(member_names(manifest)) or '?'}, not one model: "
                                 "name one of its members")
    return Manifest.from_json(manifest, path)


def member_names(document: Mapping[str, Any]) -> List[str]:
    """The member names an ensemble's manifest lists, as text, whatever a hand-edited one holds
    (empty when it lists none)."""
    entries = document.get("members")
    if not isinstance(entries, list):
        return []
    return [str(e.get("name") if isinstance(e, Mapping) else e) for e in entries]


def load(model: PathLike, device: str = "cpu") -> Bundle:
    """Load a bundle by path or name: manifest, hash check, network, weights (strict)."""
    folder = resolve(model)
    manifest = read_manifest(folder)
    weights = os.path.join(folder, WEIGHTS)
    if not os.path.exists(weights):
        raise InputError(weights, "file not found")
    digest = sha256_of(weights)
    if digest != manifest.weights_sha256:
        raise InputError(weights, f"sha256 {digest[:12]}... does not match the manifest's "
                                  f"{manifest.weights_sha256[:12]}...: corrupt or replaced weights")
    from safetensors.torch import load_file

    from ..networks import build

    net = build(manifest.network, **manifest.options)
    try:
        state = load_file(weights, device="cpu")
        net.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, ValueError) as exc:
        raise InputError(weights, f"does not fit network {manifest.network} ({str(exc).splitlines()[0][:150]})") from None
    net.eval().to(device)
    return Bundle(folder, manifest, net)


STORAGE = ("float32", "float16")


def half_precision(state: Mapping[str, "torch.Tensor"]) -> Dict[str, "torch.Tensor"]:
    """Weights as fp16 storage holds them: floating-point tensors in half precision, others as they are."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def save(network: "SegmentationNetwork", folder: PathLike, manifest: Mapping[str, Any], storage: str = "float32") -> str:
    """Write a bundle atomically (a temporary folder renamed into place); returns the folder.
    ``storage="float16"`` stores floating-point weights in half precision (half the size)."""
    from safetensors.torch import save_file

    if storage not in STORAGE:
        raise InputError(None, f"weights storage must be one of {', '.join(STORAGE)}, not {storage!r}")

    def fill(tmp: str) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
        if storage == "float16":
            state = half_precision(state)
        save_file(state, os.path.join(tmp, WEIGHTS))
        os.chmod(os.path.join(tmp, WEIGHTS), 0o644)
        full = {k: v for k, v in manifest.items() if k != "weights_storage"}
        full.update({"format": FORMAT, "weights_sha256": sha256_of(os.path.join(tmp, WEIGHTS))})
        if storage != "float32":
            full["weights_storage"] = storage
        full.setdefault("output_kind", network.output_kind)
        full.setdefault("in_sequences", list(network.in_sequences))
        full.setdefault("patch_size", list(network.patch_size))
        Manifest.from_json(full, os.path.join(os.fspath(folder), MANIFEST))  # what is written must read back
        write_json(os.path.join(tmp, MANIFEST), full)

    return write_folder(folder, fill)


def write_json(path: str, document: Mapping[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=2)
        f.write("\n")


def check_new_folder(out: str) -> None:
    if not os.path.isdir(os.path.dirname(out)):
        raise InputError(out, "output folder does not exist")
    if os.path.exists(out) and not os.path.isdir(out):
        raise InputError(out, "exists and is not a folder; choose a new folder")
    if os.path.isdir(out) and os.listdir(out):
        raise InputError(out, "exists and is not empty; choose a new folder")


def write_folder(folder: PathLike, fill: Callable[[str], None]) -> str:
    """A new model folder: ``fill`` writes into a temporary folder beside it, which is then renamed
    into place (a failure leaves nothing behind); returns the folder."""
    out = os.path.abspath(os.fspath(folder))
    check_new_folder(out)
    tmp = tempfile.mkdtemp(prefix=".btseg-model-", dir=os.path.dirname(out))
    try:
        fill(tmp)
        os.chmod(tmp, 0o755)
        if os.path.exists(out):
            os.rmdir(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
