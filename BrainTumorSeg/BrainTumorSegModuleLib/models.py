"""The model list: installed bundles and ensembles, folders loaded by hand, and what the module
says of each, from its manifest alone: a tooltip, and the note under the list, which gives the
held-out figures (per tumor grade where the manifest has them) and says when it has none.

Manifests may be written by hand: a missing or odd field is left out, never an error.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .errors import ModuleError

REGIONS = (("WT", "whole tumor"), ("TC", "tumor core"), ("ET", "enhancing tumor"))
# groups of validation.by_grade (BrainTumorSegLib.evaluation.cross_validation.grade_summary), as the note names them
GRADES = (("HGG", "high-grade"), ("low-grade", "low-grade"), ("little-ET", "little enhancing tumor"))
FEW_CASES = 30  # below this many held-out cases the note calls its figures rough
GENERAL = ("Every result needs checking: no model here is a medical device or validated for clinical use. "
           "With 'Clinical scans: automatic' the skull is removed and the sequences registered first.")


def models() -> List[Dict]:
    """Installed model bundles and ensembles (manifests; torch is not loaded), the default first
    (the model list selects the first)."""
    from BrainTumorSegLib.models import bundles, catalog

    return sorted(catalog.installed(), key=lambda m: m["name"] != bundles.DEFAULT_MODEL)


def models_in(folders: List[str]) -> List[Dict]:
    """Manifests of bundle folders loaded by hand earlier; folders that are gone are skipped."""
    from BrainTumorSegLib.errors import InputError
    from BrainTumorSegLib.models import ensembles

    found = []
    for folder in folders:
        try:
            m = ensembles.describe(folder)
        except InputError:
            continue
        found.append(dict(m, path=folder, name=os.path.basename(os.path.normpath(folder))))
    return found


def finetune_source(model: str) -> str:
    """The bundle fine-tuning starts from: the model, or an ensemble's first member (fine-tuning
    trains one network)."""
    from BrainTumorSegLib.errors import InputError
    from BrainTumorSegLib.models import ensembles

    try:
        return ensembles.members(model)[0]
    except InputError as exc:
        raise ModuleError(str(exc)) from None


def _section(mapping: Any, key: str) -> Mapping:
    value = mapping.get(key) if isinstance(mapping, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _count(value: Any) -> Optional[int]:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _cases(n: int) -> str:
    return f"{n} case{'' if n == 1 else 's'}"


def _held_out(manifest: Mapping) -> Tuple[Mapping, bool]:
    """Held-out figures, and whether they are cross-validated: a model's own validation, or an
    ensemble of cross-validation folds' pooled out-of-fold figures (each case segmented by the
    member that did not train on it; with the ensemble's postprocessing where it has them)."""
    from BrainTumorSegLib.models.ensembles import held_out_key

    key = held_out_key(manifest)
    return (_section(_section(manifest, "metrics"), key) if key else {}), key not in (None, "validation_segment")


def _member_names(manifest: Mapping) -> List[str]:
    from BrainTumorSegLib.models import bundles

    return bundles.member_names(manifest)


def _network(manifest: Mapping) -> str:
    names = _member_names(manifest)
    return f"ensemble of {', '.join(names)}" if names else str(manifest.get("network", "?"))


def model_tooltip(manifest: Mapping) -> str:
    """What the model list shows for a bundle: description, label scheme, validation figures."""
    lines = [str(manifest.get("description") or manifest.get("id", "?"))]
    lines.append(f"Label scheme: {manifest.get('label_scheme', '?')}; network: {_network(manifest)}")
    validation, cross_validated = _held_out(manifest)
    val = _section(validation, "mean")
    keys = ("dice_WT", "dice_TC", "dice_ET", "hd95_WT")
    if all(_number(val.get(k)) is not None for k in keys):
        n = len(validation.get("cases") or [])
        what = "Out of fold" if cross_validated else "Validation"
        lines.append(f"{what} ({n} held-out cases): Dice WT {val['dice_WT']:.2f}, TC {val['dice_TC']:.2f}, "
                     f"ET {val['dice_ET']:.2f}; HD95 WT {val['hd95_WT']:.1f} mm")
    if manifest.get("demo"):
        lines.append("A demo trained on synthetic phantoms: not for real patients.")
    if manifest.get("error"):
        lines.append(f"Unusable: {manifest['error']}")
    return "\n".join(lines)


def dice_figures(figures: Mapping, named: bool = True) -> Optional[str]:
    """``Dice 0.85 (whole tumor), 0.84 (tumor core), 0.83 (enhancing tumor)`` from ``dice_WT``...
    (``named`` off: the numbers alone), or None when one of the three is missing."""
    values = [_number(figures.get(f"dice_{key}")) for key, _ in REGIONS]
    if any(v is None for v in values):
        return None
    parts = [f"{v:.2f}" + (f" ({words})" if named else "") for v, (_, words) in zip(values, REGIONS)]
    return "Dice " + ", ".join(parts)


def grade_figures(by_grade: Mapping) -> List[str]:
    """One phrase per tumor-grade group that has cases and figures, e.g. ``low-grade (1 case):
    Dice 0.91, 0.75, 0.00``."""
    phrases = []
    for key, words in GRADES:
        group = _section(by_grade, key)
        n, dice = _count(group.get("cases")), dice_figures(group, named=False)
        if n and dice:
            phrases.append(f"{words} ({_cases(n)}): {dice}")
    return phrases


def missing_note(missing: Mapping) -> str:
    """`` With T1 left out: Dice 0.84, 0.76, 0.65; with T2 left out: ...`` from a held-out table's
    ``missing_sequences`` (the same cases segmented with that sequence left empty), or ''."""
    phrases = []
    for name, figures in missing.items():
        dice = dice_figures(_section(figures, "mean"), named=False)
        if dice and isinstance(name, str) and name.startswith("no "):
            phrases.append(f"with {name[3:]} left out: {dice}")
    text = "; ".join(phrases)
    return f" {text[:1].upper()}{text[1:]}." if text else ""


def validation_note(manifest: Mapping) -> str:
    """The held-out figures a manifest gives, per grade where it has them, in words; says so when
    it has none (or none per grade)."""
    validation, cross_validated = _held_out(manifest)
    overall = dice_figures(_section(validation, "mean"))
    cases = validation.get("cases")
    n = len(cases) if isinstance(cases, list) else 0
    if overall is None or not n:
        return "Its manifest gives no figures on held-out cases."
    postprocessed = bool(_section(_section(manifest, "metrics"), "out_of_fold_postprocessed"))
    from BrainTumorSegLib.models.ensembles import held_out_by

    # a model trained on every case (--fold all) has no held-out case: its design's fold models' figures
    who = ("a network trained as this one was but without that case's fold" if held_out_by(manifest)
           else "the member that did not train on it")
    text = (f"Cross-validated on {_cases(n)}, each segmented by {who}"
            + (" (with its postprocessing, chosen on these same cases)" if postprocessed else "") + f": {overall}."
            if cross_validated else f"On {_cases(n)} held out from its training: {overall}.")
    by_grade = _section(validation, "by_grade")
    phrases = grade_figures(by_grade)
    if phrases:
        text += " By grade: " + "; ".join(phrases) + "."
        without = _section(by_grade, "without_et")
        none_of, none_predicted = _count(without.get("cases")), _count(without.get("none_predicted"))
        if none_of and none_predicted is not None and none_predicted <= none_of:
            text += (f" In {none_of - none_predicted} of {_cases(none_of)} without enhancing tumor, "
                     "some was predicted anyway.")
    else:
        text += " Its manifest gives no figures per tumor grade: how it does on low-grade gliomas is not known."
    text += missing_note(_section(validation, "missing_sequences"))
    if n < FEW_CASES:
        text += " Figures from so few cases are rough."
    return text


def model_note(manifest: Mapping) -> str:
    """The note under the model list for the chosen model: what it is (its manifest's own note, or
    its description), its held-out figures, what fine-tuning starts from, and what holds for every
    model."""
    name = str(manifest.get("name") or manifest.get("id") or "This model")
    if manifest.get("error"):
        return f"{name} cannot be used: {manifest['error']}"
    about = str(manifest.get("note") or manifest.get("description") or "its manifest does not say what it is")
    about = about.strip().rstrip(".")
    parts = [f"{name}: {about[:1].upper()}{about[1:]}."]
    members = _member_names(manifest)
    if members:
        parts.append(f"It averages {', '.join(members[:-1])} and {members[-1]}; fine-tuning starts from {members[0]}.")
    parts.append("A demo: it has no figures on real scans." if manifest.get("demo") else validation_note(manifest))
    parts.append(GENERAL)
    return " ".join(parts)
