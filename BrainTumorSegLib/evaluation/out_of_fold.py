"""Out-of-fold figures of a cross-validation's fold models, pooled: each case scored by the fold
model that held it out, from their manifests (postprocessing off), and segmented again to choose
the postprocessing and window of a model of their design on those pooled held-out cases."""
from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import InputError
from ..models import bundles
from ..postprocess.cleanup import PostprocessOptions
from ..read.cases import ALL_FOUR, find_cases
from .cross_validation import FOLDS, grade_summary

if TYPE_CHECKING:  # SimpleITK: a fold trained from a pack imports the recipe without it
    from .real_validation import RawLabels


def pooled_out_of_fold(models: Sequence[str], parts: Sequence[bundles.Manifest]) -> Optional[Dict]:
    """When the members are the folds of one cross-validation (distinct folds of the same table),
    each case scored by the fold model that held it out, pooled from their manifests; else None."""
    found = [p.document.get("cross_validation") for p in parts]
    cv: List[Dict] = [c for c in found if isinstance(c, dict)]
    if len(cv) != len(found):
        return None
    if len({c["fold"] for c in cv}) != len(cv) or any(c["folds"] != cv[0]["folds"] for c in cv):
        raise InputError(models[0], "the members are cross-validation folds, but not distinct folds of one table")
    per_case = {cid: row for p in parts for cid, row in p.document["metrics"]["validation_segment"]["per_case"].items()}
    by_grade = grade_summary(per_case)
    mean = {k: v for k, v in by_grade["all"].items() if k != "cases"}
    return {"cases": list(per_case), "per_case": per_case, "mean": mean, "by_grade": by_grade,
            "folds": sorted(c["fold"] for c in cv), "through": "each case by the one fold model that held it out, "
            "through the full segment path on the 1 mm grid, postprocessing off"}


WINDOW_TOLERANCE = 0.005  # mean Dice the faster whole-volume pass may give up against patch windows


def _pooled_inference(data_dir: str, models: Sequence[str], parts: Sequence[bundles.Manifest],
                      log: Callable[..., None]) -> Dict:
    """Each fold's held-out cases segmented again by that fold's model (postprocessing off), pooled,
    once with sliding windows of the training patch and once in one pass over the whole volume,
    each with all four sequences and again with T1 and with T2 left out
    (``real_validation.MISSING_CONDITIONS``); for each window, the postprocessing setting with the best
    mean Dice over those three conditions (nnU-Net's practice, made to hold when a clinic lacks a
    sequence). The whole-volume pass (about three times faster on a CPU) is chosen unless patch
    windows are better by more than :data:`WINDOW_TOLERANCE` on that mean. Returns the window, the
    setting and the pooled figures with them (optimistic: chosen on these same cases), the other
    window's recorded."""
    from ..training import check_cases
    from .real_validation import MISSING_CONDITIONS, score_raw, segment_raw  # SimpleITK: only when cases are segmented

    cases = {c.case_id: c for c in check_cases(find_cases(data_dir))}
    held = {}
    for m, p in zip(models, parts):
        held[m] = list(FOLDS[p.document["cross_validation"]["fold"]])
        missing = [cid for cid in held[m] if cid not in cases]
        if missing:
            raise InputError(data_dir, f"lacks held-out case(s) {', '.join(missing)} of {p.id}")
    conditions = {ALL_FOUR: None, **MISSING_CONDITIONS}
    found: Dict[str, Tuple[Dict, PostprocessOptions]] = {}
    for window in ("patch", "whole"):
        raw: Dict[str, RawLabels] = {}
        for name, without in conditions.items():
            for m in models:
                part = segment_raw(m, [cases[cid] for cid in held[m]], log=log, window=window, without=without)
                raw[name] = raw[name].merged(part) if name in raw else part
        found[window] = score_raw(raw.pop(ALL_FOUR), missing=raw)
    dice = {w: max(d for _, d in found[w][0]["postprocessing_search"]["mean_dice"]) for w in found}
    window = "whole" if dice["whole"] >= dice["patch"] - WINDOW_TOLERANCE else "patch"
    report, chosen = found[window]
    report["window_search"] = {"rule": f"whole unless patch windows are better by more than {WINDOW_TOLERANCE} "
                                       "mean Dice over the conditions (each with its best postprocessing)",
                               "mean_dice": dice, "chosen": window,
                               "other": {"window": (other := "patch" if window == "whole" else "whole"),
                                         "mean": found[other][0]["mean"], "by_grade": found[other][0]["by_grade"],
                                         "postprocessing": asdict(found[other][1])}}
    return {"report": report, "postprocessing": asdict(chosen), "window": window}


def out_of_fold_fields(data_dir: str, models: Sequence[str], parts: Sequence[bundles.Manifest],
                       log: Callable[..., None] = print) -> Optional[Dict]:
    """For the fold models of one cross-validation: their pooled out-of-fold figures (postprocessing
    off) and the postprocessing and window chosen on those pooled held-out cases, as manifest fields
    (``metrics``, ``postprocessing``, ``window``) of a model of their design; None for other models."""
    pooled = pooled_out_of_fold(models, parts)
    if pooled is None:
        return None
    chosen = _pooled_inference(data_dir, models, parts, log)
    return {"metrics": {"out_of_fold": pooled, "out_of_fold_postprocessed": chosen["report"]},
            "postprocessing": chosen["postprocessing"], "window": chosen["window"]}
