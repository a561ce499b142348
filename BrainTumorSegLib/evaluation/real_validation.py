"""Scoring models on real, expert-labelled cases through the full ``segment`` path.

Every case is segmented from its original files as a user's would be, with postprocessing off;
postprocessing is then applied to the labels (a given setting, or each of a small grid to choose
one) and scored on the 1 mm reference grid: Dice, HD95 and volume error per region, per case, their
means, and the same per grade (``cross_validation.grade_summary``). The same cases segmented with T1
or T2 left out (``segment`` accepts either missing) can be scored beside them, and then take part in
the choice: a setting is chosen for how it does in all those conditions, not with four sequences only.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict
from typing import Callable, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..labels import REGIONS
from ..models import ensembles
from ..pipeline import segment
from ..postprocess.cleanup import PostprocessOptions, postprocess
from ..read.cases import ALL_FOUR, OPTIONAL_SEQUENCES, Case, without_condition
from ..read.images import read_image, voxel_volume_mm3
from ..segment_options import NO_POSTPROCESSING, SegmentOptions
from .cross_validation import grade_summary
from .scoring import score_images

POSTPROCESS_GRID = {"min_et_voxels": (0, 200, 500), "min_component_voxels": (0, 200, 1000)}
# the conditions a shipped setting must hold in beside all four sequences (issue 22, item 7): the
# sequence each leaves out, the two that ``segment`` accepts missing
MISSING_CONDITIONS = {without_condition(role): role for role in OPTIONAL_SEQUENCES}


def case_table(rows: Mapping[str, Dict[str, Dict[str, float]]], seconds: Mapping[str, float]
               ) -> Tuple[Dict[str, Dict], Dict[str, float]]:
    """Per-case Dice, HD95 and volume error (mL, predicted minus reference) per region and seconds,
    and their means, from ``case_metrics`` rows keyed by case id."""
    per_case: Dict[str, Dict] = {cid: {r: {"dice": m[r]["dice"], "hd95": m[r]["hd95"],
                          "volume_error_ml": m[r]["volume_pred_ml"] - m[r]["volume_ref_ml"],
                          "volume_ref_ml": m[r]["volume_ref_ml"]} for r in REGIONS}
                | {"seconds": seconds[cid]} for cid, m in rows.items()}
    mean = {f"{k}_{r}": float(np.mean([per_case[c][r][k] for c in per_case]))
            for k in ("dice", "hd95", "volume_error_ml") for r in REGIONS}
    mean["seconds"] = float(np.mean(list(seconds.values())))
    return per_case, mean


class RawLabels(NamedTuple):
    """Labels ``segment`` made with postprocessing off, the expert labels and seconds, by case id."""

    labels: Dict[str, sitk.Image]
    references: Dict[str, sitk.Image]
    reference_paths: Dict[str, str]
    seconds: Dict[str, float]
    scheme: str

    def merged(self, other: "RawLabels") -> "RawLabels":
        if other.scheme != self.scheme:
            raise InputError(None, f"cannot pool labels of schemes {self.scheme} and {other.scheme}")
        return RawLabels({**self.labels, **other.labels}, {**self.references, **other.references},
                         {**self.reference_paths, **other.reference_paths}, {**self.seconds, **other.seconds},
                         self.scheme)


def segment_raw(models: Union[str, Sequence[str]], cases: Sequence[Case], device: str = "cpu", log: Callable[..., None] = print,
                window: str = "auto", without: Optional[str] = None) -> RawLabels:
    """Segment ``cases`` through the full ``segment`` path with postprocessing off (and ``window``,
    :class:`SegmentOptions`'), with the sequence ``without`` (a role) left out when given.
    ``models`` may be a bundle, an ensemble, or a list of models (averaged)."""
    b = [x for m in ([models] if isinstance(models, str) else models) for x in ensembles.load_models(m)]
    raw = RawLabels({}, {}, {}, {}, b[0].manifest.label_scheme)
    for c in cases:
        inputs = {role: path for role, path in c.sequences.items() if role != without}
        res = segment(inputs, b, device, SegmentOptions(window=window, **NO_POSTPROCESSING))
        raw.labels[c.case_id] = res.labels
        raw.references[c.case_id] = read_image(c.paths["seg"], "label")
        raw.reference_paths[c.case_id] = c.paths["seg"]
        raw.seconds[c.case_id] = res.timings["total"]
        log(f"validation {c.case_id}{f' without {without}' if without else ''}: {res.timings['total']:.1f} s")
    return raw


def score_raw(raw: RawLabels, postprocessing: Optional[PostprocessOptions] = None,
              missing: Optional[Mapping[str, RawLabels]] = None) -> Tuple[Dict, PostprocessOptions]:
    """Per-case and mean Dice, HD95 and volume error per region (and per grade) of ``raw`` after
    postprocessing: ``postprocessing`` when given, else the setting of :data:`POSTPROCESS_GRID` with
    the best mean Dice over these cases (the search is recorded). ``missing``: the same cases
    segmented in other conditions (name -> labels, e.g. :data:`MISSING_CONDITIONS`' without T1 and
    without T2); they are scored too, and the search then takes the mean Dice over the conditions."""
    conditions = {ALL_FOUR: raw, **(missing or {})}

    def postprocessed(labels: sitk.Image, post: PostprocessOptions) -> sitk.Image:
        out = sitk.GetImageFromArray(postprocess(sitk.GetArrayViewFromImage(labels), raw.scheme, post,
                                                 voxel_volume_mm3(labels)))
        out.CopyInformation(labels)
        return out

    def run(labels: RawLabels, post: PostprocessOptions, dice_only: bool = False) -> Dict[str, Dict[str, Dict]]:
        return {cid: score_images(postprocessed(labels.labels[cid], post), labels.references[cid],
                                  pred_scheme=labels.scheme, pred_name=cid, ref_name=labels.reference_paths[cid],
                                  dice_only=dice_only)
                for cid in labels.labels}

    def mean_dice(rows: Mapping[str, Dict[str, Dict[str, float]]]) -> float:
        return float(np.mean([rows[c][r]["dice"] for c in rows for r in REGIONS]))

    candidates = [postprocessing] if postprocessing else [
        PostprocessOptions(min_et_voxels=et, min_component_voxels=comp)
        for et, comp in itertools.product(POSTPROCESS_GRID["min_et_voxels"], POSTPROCESS_GRID["min_component_voxels"])]
    by_condition = {name: [mean_dice(run(labels, post, dice_only=True)) for post in candidates]
                    for name, labels in conditions.items()}
    criterion = [float(np.mean([by_condition[name][i] for name in conditions])) for i in range(len(candidates))]
    chosen = candidates[int(np.argmax(criterion))]
    tables = {name: case_table(run(labels, chosen), labels.seconds) for name, labels in conditions.items()}
    per_case, mean = tables[ALL_FOUR]
    report = {"cases": list(per_case), "per_case": per_case, "mean": mean, "by_grade": grade_summary(per_case),
              "through": "full segment path, 1 mm reference grid",
              "hd95": "mm, max of the directed 95th percentiles; 373.13 mm when exactly one mask is empty"}
    if missing:
        report["missing_sequences"] = {name: {"mean": m, "by_grade": grade_summary(rows)}
                                       for name, (rows, m) in tables.items() if name != ALL_FOUR}
    if postprocessing:
        report["postprocessing"] = asdict(postprocessing)
    else:
        report["postprocessing_search"] = {
            "grid": POSTPROCESS_GRID, "conditions": list(conditions),
            "criterion": "mean Dice over the cases and regions" + (", averaged over the conditions" if missing else ""),
            "mean_dice": [[asdict(p), d] for p, d in zip(candidates, criterion)],
            **({"by_condition": by_condition} if missing else {})}
    return report, chosen


def validate_bundle(bundle_dir: Union[str, Sequence[str]], cases: Sequence[Case], device: str = "cpu",
                    log: Callable[..., None] = print,
                    postprocessing: Optional[PostprocessOptions] = None) -> Tuple[Dict, PostprocessOptions]:
    """Segment ``cases`` through the full ``segment`` path (postprocessing off) and score them
    (:func:`score_raw`): with ``postprocessing`` when given, else the best setting of the grid on
    these cases. ``bundle_dir`` may be an ensemble, or a list of models."""
    return score_raw(segment_raw(bundle_dir, cases, device, log), postprocessing)
