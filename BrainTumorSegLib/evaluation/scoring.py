"""Evaluating predicted label maps against references: one case or two folders by case id."""
from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from ..errors import InputError, PathLike
from ..labels import REGIONS, check_scheme, detect_scheme
from ..read.cases import parse_name
from ..read.formats import image_extension, strip_extension
from ..read.images import grid_difference, read_image, same_grid
from ..write.atomic import write_json, write_text
from .metrics import METRICS, case_metrics, summarize

_TRAILING = re.compile(r"[_-](seg|pred|prediction|label|labels)$", re.IGNORECASE)


def case_id_of(path: str) -> str:
    """Case id of a label file: its name without extension and a trailing _seg/_pred-like suffix."""
    parsed = parse_name(path)
    if parsed is not None and parsed[1] == "seg":
        return parsed[0]
    return _TRAILING.sub("", strip_extension(os.path.basename(path)))


def label_files(folder: str) -> Dict[str, str]:
    """Label files in ``folder`` by case id: ``<id>.nii.gz``-like files at the top level, and the
    ``seg`` file of every BraTS case subfolder."""
    if not os.path.isdir(folder):
        raise InputError(folder, "folder not found")
    found: Dict[str, str] = {}

    def add(path: str) -> None:
        cid = case_id_of(path)
        if cid in found:
            raise InputError(path, f"second label file for case {cid} (first: {found[cid]})")
        found[cid] = path

    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith("."):
            continue
        if os.path.isdir(path):
            for sub in sorted(os.listdir(path)):
                parsed = parse_name(sub)
                if parsed is not None and parsed[1] == "seg":
                    add(os.path.join(path, sub))
        elif image_extension(name):
            parsed = parse_name(name)
            if parsed is None or parsed[1] == "seg":
                add(path)
    return found


@dataclass
class CaseResult:
    case_id: str
    pred: str
    ref: str
    metrics: Dict[str, Dict[str, float]]


def score_images(pred_img: sitk.Image, ref_img: sitk.Image, hd95_definition: str = "max",
                 pred_scheme: Optional[str] = None, ref_scheme: Optional[str] = None,
                 pred_name: Optional[str] = None, ref_name: Optional[str] = None,
                 dice_only: bool = False) -> Dict[str, Dict[str, float]]:
    """The metrics of every region for two label images on the same grid (schemes detected unless
    given; the names appear in errors; only Dice with ``dice_only``). The one place where a
    predicted case is scored."""
    if not same_grid(pred_img, ref_img):
        raise InputError(pred_name, f"is not on the grid of the reference {ref_name} "
                                    f"({grid_difference(pred_img, ref_img)})")
    pred = np.asarray(sitk.GetArrayViewFromImage(pred_img))
    ref = np.asarray(sitk.GetArrayViewFromImage(ref_img))
    ps = check_scheme(pred, pred_scheme, pred_name) if pred_scheme else detect_scheme(pred, pred_name)
    rs = check_scheme(ref, ref_scheme, ref_name) if ref_scheme else detect_scheme(ref, ref_name)
    return case_metrics(pred, ref, ref_img.GetSpacing()[::-1], ps, rs, hd95_definition, dice_only)


def score_against(pred_img: sitk.Image, ref_path: str, pred_scheme: Optional[str] = None,
                  hd95_definition: str = "max") -> Dict[str, Dict[str, float]]:
    """A segmentation result scored against the expert labels in ``ref_path``."""
    return score_images(pred_img, read_image(ref_path, "label"), hd95_definition, pred_scheme, None,
                        "the result", ref_path)


def evaluate_pair(pred_path: str, ref_path: str, hd95_definition: str = "max",
                  pred_scheme: Optional[str] = None, ref_scheme: Optional[str] = None,
                  case_id: Optional[str] = None) -> CaseResult:
    m = score_images(read_image(pred_path, "label"), read_image(ref_path, "label"), hd95_definition,
                     pred_scheme, ref_scheme, pred_path, ref_path)
    return CaseResult(case_id or case_id_of(ref_path), pred_path, ref_path, m)


def match_folders(pred_dir: str, ref_dir: str) -> List[Tuple[str, str, str]]:
    """(case id, pred, ref) for every reference case; an error lists references without a prediction."""
    preds, refs = label_files(pred_dir), label_files(ref_dir)
    if not refs:
        raise InputError(ref_dir, "holds no label files")
    missing = sorted(set(refs) - set(preds))
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise InputError(pred_dir, f"has no prediction for {len(missing)} reference case(s): {shown}")
    return [(cid, preds[cid], refs[cid]) for cid in sorted(refs)]


def evaluate(pred: PathLike, ref: PathLike, hd95_definition: str = "max",
             pred_scheme: Optional[str] = None, ref_scheme: Optional[str] = None) -> List[CaseResult]:
    """Evaluate one file pair or two folders matched by case id.

    Args:
        pred: a predicted label file, or a folder of ``<case id>.nii.gz`` (or case folders).
        ref: the expert label file, or a folder of cases holding ``*_seg`` / ``-seg`` files.
        hd95_definition: ``"max"`` (max of the directed 95th percentiles) or ``"pooled"``.
        pred_scheme, ref_scheme: ``"brats2021"`` or ``"brats2023"``; detected from the values if None.
    """
    p, r = os.fspath(pred), os.fspath(ref)
    for path in (p, r):
        if not os.path.exists(path):
            raise InputError(path, "file not found")
    if os.path.isdir(p) != os.path.isdir(r):
        raise InputError(p, "give two files or two folders to compare")
    pairs = match_folders(p, r) if os.path.isdir(p) else [(case_id_of(r), p, r)]
    return [evaluate_pair(pp, rr, hd95_definition, pred_scheme, ref_scheme, cid) for cid, pp, rr in pairs]


def to_csv(results: List[CaseResult]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["case_id"] + [f"{reg}_{m}" for reg in REGIONS for m in METRICS] + ["pred", "ref"])
    for res in results:
        w.writerow([res.case_id] + [f"{res.metrics[reg][m]:.6g}" for reg in REGIONS for m in METRICS]
                   + [res.pred, res.ref])
    return buf.getvalue()


def summary(results: List[CaseResult], hd95_definition: str) -> Dict:
    return {
        "cases": len(results),
        "hd95_definition": hd95_definition,
        "summary": summarize([r.metrics for r in results]),
        "per_case": {r.case_id: r.metrics for r in results},
    }


def write_outputs(results: List[CaseResult], csv_path: str, json_path: str, hd95_definition: str) -> None:
    inputs = [x for r in results for x in (r.pred, r.ref)]
    write_text(csv_path, to_csv(results), inputs)
    write_json(json_path, summary(results, hd95_definition), inputs)


def format_table(results: List[CaseResult]) -> str:
    """Short text table: mean Dice and HD95 per region (and per case when few)."""
    lines = [f"{'case':<24}" + "".join(f"{'Dice ' + r:>10}" for r in REGIONS)
             + "".join(f"{'HD95 ' + r:>10}" for r in REGIONS)]
    rows = results if len(results) <= 20 else []
    for res in rows:
        lines.append(f"{res.case_id[:24]:<24}" + "".join(f"{res.metrics[r]['dice']:>10.4f}" for r in REGIONS)
                     + "".join(f"{res.metrics[r]['hd95']:>10.2f}" for r in REGIONS))
    s = summarize([r.metrics for r in results])
    for stat in ("mean", "median", "std"):
        lines.append(f"{stat:<24}" + "".join(f"{s[r]['dice'][stat]:>10.4f}" for r in REGIONS)
                     + "".join(f"{s[r]['hd95'][stat]:>10.2f}" for r in REGIONS))
    return "\n".join(lines)
