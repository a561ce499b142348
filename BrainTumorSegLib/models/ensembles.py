"""Ensembles: a folder with only ``manifest.json`` (format ``braintumorseg-ensemble/1``)
naming its members, bundles whose probabilities ``segment`` averages. :func:`members` finds them
(beside the ensemble first, then by name; each checked against the weights it was made with),
:func:`save_ensemble` writes one, :func:`load_ensemble` loads what a segmentation runs, timed.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from ..errors import InputError, PathLike
from ..read.cases import ALL_FOUR
from ..segment_options import NO_POSTPROCESSING, WINDOWS
from .bundles import (
    ENSEMBLE_FORMAT,
    MANIFEST,
    Bundle,
    check_new_folder,
    load,
    read_document,
    read_manifest,
    resolve,
    write_folder,
    write_json,
)


def member_folder(name: str, ensemble: PathLike) -> str:
    """A member's bundle folder: beside the ensemble first, then as any model name or path."""
    ensemble = os.fspath(ensemble)
    beside = os.path.join(os.path.dirname(os.path.abspath(ensemble)), name)
    return beside if os.path.exists(os.path.join(beside, MANIFEST)) else resolve(name)


def _resolve_member(entry: Any, ensemble: str) -> str:
    """The bundle folder of one entry of an ensemble's ``members``, checked against the weights
    the ensemble was made (and validated) with."""
    where = os.path.join(ensemble, MANIFEST)
    if not (isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry["name"]
            and isinstance(entry.get("weights_sha256"), str)):
        raise InputError(where, f"member {entry!r} is not an object with name and weights_sha256")
    name = entry["name"]
    try:
        folder = member_folder(name, ensemble)
        manifest = read_manifest(folder)
    except InputError as exc:
        raise InputError(where, f"member {name}: {exc}") from None
    if manifest.weights_sha256 != entry["weights_sha256"]:
        raise InputError(where, f"member {name} ({folder}) has other weights than the ensemble was made with; "
                                "make the ensemble again")
    return folder


def members(model: PathLike) -> List[str]:
    """The bundle folders a model name or path stands for: an ensemble's members, or the bundle itself."""
    folder = resolve(model)
    doc = read_document(folder)
    if doc.get("format") != ENSEMBLE_FORMAT:
        return [folder]
    entries = doc.get("members")
    if not (isinstance(entries, list) and len(entries) >= 2):
        raise InputError(os.path.join(folder, MANIFEST), "field members must list two or more models")
    return [_resolve_member(e, folder) for e in entries]


def load_models(model: PathLike, device: str = "cpu") -> List[Bundle]:
    """Load a model by path or name: ``[bundle]``, or an ensemble's members."""
    return [load(folder, device) for folder in members(model)]


def _member_name(model: str, ensemble: str) -> str:
    """How an ensemble's manifest names a member: a folder beside it by its name, another folder
    by its absolute path, an installed model by its name."""
    if os.path.isdir(model):
        path = os.path.abspath(model)
        return os.path.basename(path) if os.path.dirname(path) == os.path.dirname(ensemble) else path
    return model


def check_ensemble(folder: PathLike, models: Sequence[PathLike]) -> List[Dict[str, str]]:
    """The ``members`` entries of an ensemble of ``models`` to be written to ``folder`` (a new
    folder), after checking that they are single models that can be averaged: same sequences,
    label scheme, output kind and working spacing."""
    out = os.path.abspath(os.fspath(folder))
    check_new_folder(out)
    if len(models) < 2:
        raise InputError(None, f"an ensemble needs two or more models, not {len(models)}")
    names = [_member_name(os.fspath(m), out) for m in models]
    folders = [member_folder(n, out) for n in names]
    parts = [read_manifest(f) for f in folders]
    for key in ("in_sequences", "label_scheme", "output_kind", "spacing_mm"):
        first = getattr(parts[0], key)
        for f, p in zip(folders[1:], parts[1:]):
            if getattr(p, key) != first:
                raise InputError(f, f"cannot be averaged with {folders[0]}: its {key} is {getattr(p, key)}, not {first}")
    return [{"name": n, "weights_sha256": p.weights_sha256} for n, p in zip(names, parts)]


def save_ensemble(folder: PathLike, models: Sequence[PathLike], document: Optional[Mapping[str, Any]] = None) -> str:
    """Write an ensemble of ``models`` (names or paths) to a new folder, atomically, after
    :func:`check_ensemble`; each member is recorded with its weights' sha256. Returns the folder."""
    out = os.path.abspath(os.fspath(folder))
    full = dict(document or {})
    full.update(format=ENSEMBLE_FORMAT, members=check_ensemble(out, models))
    full.setdefault("id", os.path.basename(out))
    return write_folder(out, lambda tmp: write_json(os.path.join(tmp, MANIFEST), full))

def describe(folder: PathLike) -> Dict[str, Any]:
    """What the model lists show of a bundle or an ensemble (its manifest; an ensemble's gets
    ``network`` "ensemble" and its members' label scheme); unusable ones raise InputError."""
    doc = read_document(folder)
    if doc.get("format") != ENSEMBLE_FORMAT:
        return read_manifest(folder).to_json()
    parts = [read_manifest(m) for m in members(folder)]
    return dict(doc, network="ensemble", label_scheme=parts[0].label_scheme,
                demo=any(p.demo for p in parts))


def model_spacing(models: Sequence[Bundle]) -> Optional[float]:
    """The isotropic working spacing (mm) the models were trained at, or None for the input's own.

    Models of an ensemble must agree: their probabilities are averaged voxel by voxel.
    """
    found = {m.manifest.spacing_mm for m in models}
    if len(found) != 1:
        raise InputError(models[-1].path, "an ensemble's models must work at one spacing; "
                                          "these use " + ", ".join(sorted("the input's own grid" if f is None else f"{f:g} mm"
                                                                          for f in found)))
    return found.pop()


class ModelPart(NamedTuple):
    """One model asked for: a bundle, or an ensemble with its members."""

    id: str
    path: str
    bundles: List[Bundle]
    ensemble: bool
    note: Optional[str] = None   # an ensemble's own note (each member has its own too)
    postprocessing: Optional[Dict[str, Any]] = None  # an ensemble's own (chosen on its members' held-out cases)
    window: Optional[str] = None                     # an ensemble's own, chosen the same way
    held_out: Optional[Dict[str, Any]] = None        # per-case figures on cases it never trained on
    held_out_by: str = ""                            # whose those are, when not its own networks'
    without: Optional[Dict[str, Any]] = None         # the same cases' figures with a sequence left out


@dataclass(frozen=True)
class Models:
    """What a segmentation runs, loaded once (:func:`load_ensemble`); ``load_s`` is how long the
    loading took (0 when the models are reused for another case)."""

    parts: Tuple[ModelPart, ...]
    load_s: float = 0.0

    @property
    def members(self) -> List[Bundle]:
        """Every network whose probabilities are averaged."""
        return [b for p in self.parts for b in p.bundles]

    @property
    def ensembles(self) -> List[Dict[str, str]]:
        """The ensembles asked for (id and folder; their members are in :attr:`members`)."""
        return [{"id": p.id, "path": p.path} for p in self.parts if p.ensemble]

    @property
    def name(self) -> str:
        """What runs, as asked for: ``brats-glioma-ensemble-v9``, or ``a + b`` for models listed."""
        return " + ".join(p.id for p in self.parts)

    @property
    def description(self) -> str:
        """:attr:`name` with each ensemble's members: ``brats-glioma-ensemble-v9 (brats-glioma-v9-fold0 + ...)``."""
        return " + ".join(p.id + (f" ({' + '.join(b.id for b in p.bundles)})" if p.ensemble else "")
                          for p in self.parts)

    @property
    def postprocessing(self) -> Dict[str, Any]:
        """The postprocessing the first model asked for declares: an ensemble's own, else its first
        member's (the defaults ``SegmentOptions`` may override)."""
        first = self.parts[0]
        return first.postprocessing if first.postprocessing is not None else first.bundles[0].manifest.postprocessing

    @property
    def window(self) -> str:
        """Where the networks run unless asked otherwise (``patch`` or ``whole``): the first model's
        own, an ensemble's or its first member's."""
        first = self.parts[0]
        return first.window or first.bundles[0].manifest.window

    @property
    def held_out(self) -> Optional[Dict[str, Any]]:
        """Per-case figures (Dice, volumes) on real cases the model asked for never trained on, as its
        manifest records them; None for a list of models (no figures describe their combination)."""
        return self.parts[0].held_out if len(self.parts) == 1 else None

    @property
    def held_out_by(self) -> str:
        """Whose figures :attr:`held_out` are when not the model's own networks': for a model trained
        on every case (``train-recipe --fold all``), ``its design's fold models``; else empty."""
        return self.parts[0].held_out_by if len(self.parts) == 1 else ""

    @property
    def without(self) -> Dict[str, Any]:
        """:func:`held_out_without` of the model asked for ({} for a list of models)."""
        return (self.parts[0].without or {}) if len(self.parts) == 1 else {}

    def reused(self) -> "Models":
        """The same models for a later case: nothing is loaded again."""
        return dataclasses.replace(self, load_s=0.0)


ModelArg = Union[str, Bundle, Sequence[Union[str, Bundle]], Models]

# where manifests keep per-case figures on real cases their model never trained on, best first: an
# ensemble's pooled out-of-fold cases as it runs (its own postprocessing) or raw, a recipe bundle's
# held-out fold
HELD_OUT_TABLES = ("out_of_fold_postprocessed", "out_of_fold", "validation_segment")


def _held_out_tables(document: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """A manifest's held-out tables, in the order of :data:`HELD_OUT_TABLES`."""
    metrics = document.get("metrics")
    found = [metrics.get(key) for key in HELD_OUT_TABLES] if isinstance(metrics, dict) else []
    return [t for t in found if isinstance(t, dict)]


def held_out_key(document: Mapping[str, Any]) -> Optional[str]:
    """Which table of :data:`HELD_OUT_TABLES` a manifest's held-out figures are shown from (the
    first that is not empty), or None: the one choice ``models``, ``compare`` and the Slicer module
    share."""
    metrics = document.get("metrics")
    if isinstance(metrics, dict):
        for key in HELD_OUT_TABLES:
            if isinstance(metrics.get(key), dict) and metrics[key]:
                return key
    return None


def held_out_table(document: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The per-case held-out figures of a manifest (:data:`HELD_OUT_TABLES`), or None (for a model
    trained on every case, its design's fold models' pooled table: :func:`held_out_by`), from the
    table :func:`held_out_key` chooses."""
    key = held_out_key(document)
    rows = document["metrics"][key].get("per_case") if key else None
    return rows if isinstance(rows, dict) and rows else None


def held_out_without(document: Mapping[str, Any]) -> Dict[str, Any]:
    """The held-out cases' figures with a sequence left out, as ``ensemble --validate-on`` records
    them (``missing_sequences``: ``{"no T1": {"mean": ..., "by_grade": ...}, ...}``), with the
    four-sequence means under :data:`ALL_FOUR` and the number of cases; {} when the manifest has none."""
    for table in _held_out_tables(document):
        if isinstance(table.get("missing_sequences"), dict):
            found = {k: v["mean"] for k, v in table["missing_sequences"].items()
                     if isinstance(v, dict) and _dice_means(v.get("mean"))}
            if found and _dice_means(table.get("mean")) and isinstance(table.get("cases"), list):
                return {ALL_FOUR: table["mean"], "cases": len(table["cases"]), **found}
    return {}


def _dice_means(mean: Any) -> bool:
    return isinstance(mean, dict) and all(isinstance(mean.get(f"dice_{r}"), (int, float)) for r in ("WT", "TC", "ET"))


def held_out_by(document: Mapping[str, Any]) -> str:
    """Whose held-out figures a manifest holds when they are not its own networks' ('' when they are)."""
    return "its design's fold models" if isinstance(document.get("all_folds"), dict) else ""


def _load_part(model: Union[str, Bundle]) -> ModelPart:
    if isinstance(model, Bundle):
        doc = model.manifest.document
        return ModelPart(model.id, model.path, [model], False, held_out=held_out_table(doc), held_out_by=held_out_by(doc),
                         without=held_out_without(doc))
    folder = resolve(model)
    doc = describe(folder)
    ensemble = doc.get("format") == ENSEMBLE_FORMAT
    own = doc.get("postprocessing") if ensemble else None
    if own is not None and not (isinstance(own, dict) and set(own) <= set(NO_POSTPROCESSING)):
        raise InputError(os.path.join(folder, MANIFEST), f"field postprocessing is {own!r}; expected an object "
                                                         f"with keys among {', '.join(NO_POSTPROCESSING)}")
    window = doc.get("window") if ensemble else None
    if window is not None and window not in WINDOWS[1:]:
        raise InputError(os.path.join(folder, MANIFEST), f"field window is {window!r}; expected "
                                                         f"{' or '.join(WINDOWS[1:])}")
    loaded = load_models(folder)
    figures = doc if ensemble else loaded[0].manifest.document
    return ModelPart(str(doc.get("id")), folder, loaded, ensemble,
                     doc.get("note") if ensemble else None, dict(own) if isinstance(own, dict) else None, window,
                     held_out_table(figures), held_out_by(figures), held_out_without(figures))


def load_ensemble(model: ModelArg) -> Models:
    """Load one model or an ensemble (a list, or an ensemble's name or folder), timed; an
    ensemble's models must take the same inputs. :class:`Models` are returned as they are."""
    if isinstance(model, Models):
        return model
    t0 = time.perf_counter()
    items: List[Union[str, Bundle]] = list(model) if isinstance(model, (list, tuple)) else [model]  # type: ignore[list-item]
    models = Models(tuple(_load_part(m) for m in items))
    roles = models.members[0].manifest.in_sequences
    for m in models.members[1:]:
        if m.manifest.in_sequences != roles:
            raise InputError(m.path, "an ensemble's models must take the same sequences in the same order")
    return dataclasses.replace(models, load_s=time.perf_counter() - t0)
