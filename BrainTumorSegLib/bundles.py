"""Model bundles: a folder with ``weights.safetensors`` and ``manifest.json``.

The manifest records the architecture and its options (plain JSON values passed to
``networks.build``), the input sequences and their order, the label scheme, normalisation,
patch size, postprocessing defaults, training data and metrics, and the sha256 of the weights.
Loading verifies the hash before reading the weights and never executes code from a file:
safetensors holds tensors only, and the manifest is JSON.

Bundles are looked up by path, or by name in ``$BRAINTUMORSEG_MODELS`` (colon-separated
folders), ``~/.braintumorseg/models`` and the package's own ``models`` folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List

from .errors import InputError, PathLike

if TYPE_CHECKING:  # torch loads only when a model does: listing bundles stays light (Slicer's model list)
    from .networks import SegmentationNetwork

FORMAT = "braintumorseg-bundle/1"
WEIGHTS = "weights.safetensors"
MANIFEST = "manifest.json"
DEFAULT_MODEL = "brats-glioma-v1"  # trained on real BraTS cases (real_recipe); the phantom demo stays as a named model
_REQUIRED = ("format", "id", "network", "options", "in_sequences", "label_scheme", "output_kind",
             "patch_size", "weights_sha256")


def shipped_models_dir() -> str:
    """The bundles shipped inside the package (package data of the wheel, and installed beside
    the library by the Slicer extension)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")


def search_dirs() -> List[str]:
    """Where bundles are looked for, in order: ``$BRAINTUMORSEG_MODELS`` folders,
    ``~/.braintumorseg/models``, the package's ``models`` folder."""
    dirs = [d for d in os.environ.get("BRAINTUMORSEG_MODELS", "").split(os.pathsep) if d]
    return dirs + [os.path.join(os.path.expanduser("~"), ".braintumorseg", "models"), shipped_models_dir()]


def user_models_dir() -> str:
    """Where new models are registered: the first folder searched."""
    return search_dirs()[0]


def sha256_of(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Bundle:
    path: str
    manifest: Dict
    network: SegmentationNetwork

    @property
    def id(self) -> str:
        return self.manifest["id"]

    @property
    def demo(self) -> bool:
        return bool(self.manifest.get("demo", False))


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
    raise InputError(m, "no such model (looked in: " + ", ".join(search_dirs()) + ")")


def read_manifest(folder: PathLike) -> Dict:
    path = os.path.join(os.fspath(folder), MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise InputError(folder, f"is not a model bundle (no {MANIFEST})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from None
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise InputError(path, f"lacks {', '.join(missing)}")
    if manifest["format"] != FORMAT:
        raise InputError(path, f"has format {manifest['format']!r}; this version reads {FORMAT!r}")
    return manifest


def load(model: PathLike, device: str = "cpu") -> Bundle:
    """Load a bundle by path or name: manifest, hash check, network, weights (strict)."""
    folder = resolve(model)
    manifest = read_manifest(folder)
    weights = os.path.join(folder, WEIGHTS)
    if not os.path.exists(weights):
        raise InputError(weights, "file not found")
    digest = sha256_of(weights)
    if digest != manifest["weights_sha256"]:
        raise InputError(weights, f"sha256 {digest[:12]}... does not match the manifest's "
                                  f"{str(manifest['weights_sha256'])[:12]}...: corrupt or replaced weights")
    from safetensors.torch import load_file

    from .networks import build

    net = build(manifest["network"], **manifest["options"])
    try:
        state = load_file(weights, device="cpu")
        net.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, ValueError) as exc:
        raise InputError(weights, f"does not fit network {manifest['network']} ({str(exc).splitlines()[0][:150]})") from None
    net.eval().to(device)
    return Bundle(folder, manifest, net)


def save(network: "SegmentationNetwork", folder: PathLike, manifest: Dict) -> str:
    """Write a bundle atomically (a temporary folder renamed into place); returns the folder."""
    from safetensors.torch import save_file

    out = os.path.abspath(os.fspath(folder))
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        raise InputError(out, "output folder does not exist")
    if os.path.exists(out) and os.listdir(out):
        raise InputError(out, "exists and is not empty; choose a new folder")
    tmp = tempfile.mkdtemp(prefix=".btseg-bundle-", dir=parent)
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
        save_file(state, os.path.join(tmp, WEIGHTS))
        os.chmod(os.path.join(tmp, WEIGHTS), 0o644)
        full = dict(manifest)
        full.update({"format": FORMAT, "weights_sha256": sha256_of(os.path.join(tmp, WEIGHTS))})
        full.setdefault("output_kind", network.output_kind)
        full.setdefault("in_sequences", list(network.in_sequences))
        full.setdefault("patch_size", list(network.patch_size))
        with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as f:
            json.dump(full, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o755)
        if os.path.exists(out):
            os.rmdir(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def installed() -> List[Dict]:
    """Manifests of every bundle found in the search folders (first found wins per name)."""
    seen, found = set(), []
    for d in search_dirs():
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            folder = os.path.join(d, name)
            if name in seen or not os.path.exists(os.path.join(folder, MANIFEST)):
                continue
            try:
                m = read_manifest(folder)
            except InputError as exc:
                m = {"id": name, "error": str(exc)}
            m["path"] = folder
            m["name"] = name
            seen.add(name)
            found.append(m)
    return found
