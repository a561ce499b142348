"""Scoring models on real, expert-labelled cases through the full ``segment`` path.

Every case is segmented from its original files as a user's would be, with postprocessing off;
postprocessing is then applied to the labels (a given setting, or each of a small grid to choose
one) and scored on the 1 mm reference grid: Dice, HD95 and volume error per region, per case, their
means, and the same per grade (``cross_validation.grade_summary``).
"""
from __future__ import annotations

import itertools
from dataclasses import asdict
from typing import Dict, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..labels import REGIONS
from ..models import ensembles
from ..pipeline import segment
from ..postprocess.cleanup import PostprocessOptions, postprocess
from ..read.cases import Case
from ..read.images import read_image
from ..segment_options import NO_POSTPROCESSING, SegmentOptions
from .cross_validation import grade_summary
from .scoring import score_images

POSTPROCESS_GRID = {"min_et_voxels": (0, 200, 500), "min_component_voxels": (0, 200, 1000)}


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


def segment_raw(models: Union[str, Sequence[str]], cases: Sequence[Case], device: str = "cpu", log=print,
                window: str = "auto") -> RawLabels:
    """Segment ``cases`` through the full ``segment`` path with postprocessing off (and ``window``,
    :class:`SegmentOptions`'). ``models`` may be a bundle, an ensemble, or a list of models (averaged)."""
    b = [x for m in ([models] if isinstance(models, str) else models) for x in ensembles.load_models(m)]
    raw = RawLabels({}, {}, {}, {}, b[0].manifest.label_scheme)
    for c in cases:
        res = segment(c.sequences, b, device, SegmentOptions(window=window, **NO_POSTPROCESSING))
        raw.labels[c.case_id] = res.labels
        raw.references[c.case_id] = read_image(c.paths["seg"], "label")
        raw.reference_paths[c.case_id] = c.paths["seg"]
        raw.seconds[c.case_id] = res.timings["total"]
        log(f"validation {c.case_id}: {res.timings['total']:.1f} s")
    return raw


def score_raw(raw: RawLabels, postprocessing: Optional[PostprocessOptions] = None) -> Tuple[Dict, PostprocessOptions]:
    """Per-case and mean Dice, HD95 and volume error per region (and per grade) of ``raw`` after
    postprocessing: ``postprocessing`` when given, else the setting of :data:`POSTPROCESS_GRID` with
    the best mean Dice over these cases (the search is recorded)."""

    def postprocessed(labels: sitk.Image, post: PostprocessOptions) -> sitk.Image:
        out = sitk.GetImageFromArray(postprocess(sitk.GetArrayViewFromImage(labels), raw.scheme, post))
        out.CopyInformation(labels)
        return out

    def run(post: PostprocessOptions) -> Dict[str, Dict[str, Dict[str, float]]]:
        return {cid: score_images(postprocessed(raw.labels[cid], post), raw.references[cid], pred_scheme=raw.scheme,
                                  pred_name=cid, ref_name=raw.reference_paths[cid]) for cid in raw.labels}

    candidates = [postprocessing] if postprocessing else [
        PostprocessOptions(min_et_voxels=et, min_component_voxels=comp)
        for et, comp in itertools.product(POSTPROCESS_GRID["min_et_voxels"], POSTPROCESS_GRID["min_component_voxels"])]
    mean_dice = []
    for post in candidates:
        rows = run(post)
        mean_dice.append(float(np.mean([rows[c][r]["dice"] for c in rows for r in REGIONS])))
    chosen = candidates[int(np.argmax(mean_dice))]
    per_case, mean = case_table(run(chosen), raw.seconds)
    report = {"cases": list(per_case), "per_case": per_case, "mean": mean, "by_grade": grade_summary(per_case),
              "through": "full segment path, 1 mm reference grid",
              "hd95": "mm, max of the directed 95th percentiles; 373.13 mm when exactly one mask is empty"}
    if postprocessing:
        report["postprocessing"] = asdict(postprocessing)
    else:
        report["postprocessing_search"] = {"grid": POSTPROCESS_GRID,
                                           "mean_dice": [[asdict(p), d] for p, d in zip(candidates, mean_dice)]}
    return report, chosen


def validate_bundle(bundle_dir: Union[str, Sequence[str]], cases: Sequence[Case], device: str = "cpu", log=print,
                    postprocessing: Optional[PostprocessOptions] = None) -> Tuple[Dict, PostprocessOptions]:
    """Segment ``cases`` through the full ``segment`` path (postprocessing off) and score them
    (:func:`score_raw`): with ``postprocessing`` when given, else the best setting of the grid on
    these cases. ``bundle_dir`` may be an ensemble, or a list of models."""
    return score_raw(segment_raw(bundle_dir, cases, device, log), postprocessing)
