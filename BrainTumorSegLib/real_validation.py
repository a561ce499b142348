"""Scoring models on real, expert-labelled cases through the full ``segment`` path.

Every case is segmented from its original files as a user's would be, with postprocessing off;
postprocessing is then applied to the labels (a given setting, or each of a small grid to choose
one) and scored on the 1 mm reference grid: Dice, HD95 and volume error per region, per case, their
means, and the same per grade (``cross_validation.grade_summary``).
"""
from __future__ import annotations

import itertools
from dataclasses import asdict
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from . import bundles
from .cases import Case
from .cross_validation import grade_summary
from .evaluation import score_images
from .imageio import read_image
from .inference import SegmentOptions, segment
from .labels import REGIONS
from .postprocessing import PostprocessOptions, postprocess
from .segment_options import NO_POSTPROCESSING

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


def validate_bundle(bundle_dir: Union[str, Sequence[str]], cases: Sequence[Case], device: str = "cpu", log=print,
                    postprocessing: Optional[PostprocessOptions] = None) -> Tuple[Dict, PostprocessOptions]:
    """Segment ``cases`` through the full ``segment`` path; per-case and mean Dice, HD95 and volume
    error per region, the seconds per case, and the postprocessing setting with the best mean Dice
    on these cases (postprocessing runs on the labels ``segment`` made with it switched off), or
    ``postprocessing`` when given. ``bundle_dir`` may be an ensemble, or a list of models."""
    b = [x for m in ([bundle_dir] if isinstance(bundle_dir, str) else bundle_dir) for x in bundles.load_models(m)]
    cases_by_id = {c.case_id: c for c in cases}
    raw, refs, seconds = {}, {}, {}
    for c in cases:
        res = segment(c.sequences, b, device, SegmentOptions(**NO_POSTPROCESSING))
        raw[c.case_id] = res.labels
        refs[c.case_id] = read_image(c.paths["seg"], "label")
        seconds[c.case_id] = res.timings["total"]
        log(f"validation {c.case_id}: {res.timings['total']:.1f} s")
    scheme = b[0].manifest.label_scheme

    def postprocessed(labels: sitk.Image, post: PostprocessOptions) -> sitk.Image:
        out = sitk.GetImageFromArray(postprocess(sitk.GetArrayViewFromImage(labels), scheme, post))
        out.CopyInformation(labels)
        return out

    def run(post: PostprocessOptions) -> Dict[str, Dict[str, Dict[str, float]]]:
        return {cid: score_images(postprocessed(raw[cid], post), refs[cid], pred_scheme=scheme,
                                  pred_name=cid, ref_name=cases_by_id[cid].paths["seg"]) for cid in raw}

    candidates = [postprocessing] if postprocessing else [
        PostprocessOptions(min_et_voxels=et, min_component_voxels=comp)
        for et, comp in itertools.product(POSTPROCESS_GRID["min_et_voxels"], POSTPROCESS_GRID["min_component_voxels"])]
    mean_dice = []
    for post in candidates:
        rows = run(post)
        mean_dice.append(float(np.mean([rows[c][r]["dice"] for c in rows for r in REGIONS])))
    chosen = candidates[int(np.argmax(mean_dice))]
    per_case, mean = case_table(run(chosen), seconds)
    report = {"cases": list(per_case), "per_case": per_case, "mean": mean, "by_grade": grade_summary(per_case),
              "through": "full segment path, 1 mm reference grid",
              "hd95": "mm, max of the directed 95th percentiles; 373.13 mm when exactly one mask is empty"}
    if postprocessing:
        report["postprocessing"] = asdict(postprocessing)
    else:
        report["postprocessing_search"] = {"grid": POSTPROCESS_GRID,
                                           "mean_dice": [[asdict(p), d] for p, d in zip(candidates, mean_dice)]}
    return report, chosen
