"""BraTS metrics per region (WT, TC, ET): Dice, sensitivity, specificity, HD95 and volume.

HD95 definition
---------------
Surfaces are the voxels of a mask that are not in its erosion by the 6-connected cross (voxels on
the image border count as surface). Distances are Euclidean, in mm, using the image spacing
(anisotropic spacing is honoured). Two definitions are offered:

* ``"max"`` (default): the larger of the two directed 95th percentiles, pred -> ref and
  ref -> pred. This is what CaPTk (the BraTS 2017-2021 evaluation) and MONAI's
  ``compute_hausdorff_distance(percentile=95)`` compute.
* ``"pooled"``: the 95th percentile of both directed distance sets pooled together, as MedPy's
  ``hd95`` and panoptica (BraTS 2023+) compute.

Empty masks follow the BraTS convention (nnU-Net v1 ``compute_BraTS_HD95``): both empty ->
Dice 1 and HD95 0; exactly one empty -> Dice 0 and HD95 373.12866 mm (the diagonal of a
240 x 240 x 155 mm volume). Percentiles use numpy's default linear interpolation.
"""
from __future__ import annotations

import math
from typing import Dict, Sequence, Tuple

import numpy as np
from scipy import ndimage

from ..labels import REGIONS, LabelScheme, labels_to_regions

HD95_EMPTY = 373.12866
HD95_DEFINITIONS = ("max", "pooled")
METRICS = ("dice", "sensitivity", "specificity", "hd95", "volume_pred_ml", "volume_ref_ml")


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    p, r = np.asarray(pred, bool), np.asarray(ref, bool)
    total = int(p.sum()) + int(r.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, r).sum()) / total


def sensitivity(pred: np.ndarray, ref: np.ndarray) -> float:
    """TP / (TP + FN); 1.0 when the reference is empty (nothing to miss)."""
    p, r = np.asarray(pred, bool), np.asarray(ref, bool)
    pos = int(r.sum())
    return 1.0 if pos == 0 else int(np.logical_and(p, r).sum()) / pos


def specificity(pred: np.ndarray, ref: np.ndarray) -> float:
    """TN / (TN + FP); 1.0 when the reference covers everything."""
    p, r = np.asarray(pred, bool), np.asarray(ref, bool)
    neg = int((~r).sum())
    return 1.0 if neg == 0 else int(np.logical_and(~p, ~r).sum()) / neg


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def surface_distances(pred: np.ndarray, ref: np.ndarray,
                      spacing: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm (pred -> ref, ref -> pred) of two non-empty masks.

    ``spacing`` is given in array axis order.
    """
    p, r = np.asarray(pred, bool), np.asarray(ref, bool)
    union = p | r
    # Work inside the union's bounding box plus one voxel: the nearest surface voxel of either
    # mask lies inside it, and the extra voxel keeps the erosion identical to the full image.
    lo = [max(0, int(ix.min()) - 1) for ix in np.nonzero(union)]
    hi = [min(n, int(ix.max()) + 2) for n, ix in zip(union.shape, np.nonzero(union))]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    p, r = p[box], r[box]
    sp, sr = _surface(p), _surface(r)
    sampling = [float(s) for s in spacing]
    d_to_r = ndimage.distance_transform_edt(~sr, sampling=sampling)
    d_to_p = ndimage.distance_transform_edt(~sp, sampling=sampling)
    return d_to_r[sp], d_to_p[sr]


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float],
         definition: str = "max") -> float:
    """95th percentile Hausdorff distance in mm, see the module docstring for the definition."""
    if definition not in HD95_DEFINITIONS:
        raise ValueError(f"unknown HD95 definition {definition!r}; use one of {HD95_DEFINITIONS}")
    p, r = np.asarray(pred, bool), np.asarray(ref, bool)
    pe, re_ = not p.any(), not r.any()
    if pe and re_:
        return 0.0
    if pe or re_:
        return HD95_EMPTY
    a, b = surface_distances(p, r, spacing)
    if definition == "max":
        return float(max(np.percentile(a, 95), np.percentile(b, 95)))
    return float(np.percentile(np.concatenate([a, b]), 95))


def region_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float],
                   hd95_definition: str = "max") -> Dict[str, float]:
    """All metrics for one pair of boolean masks; ``spacing`` in array axis order (mm)."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return {
        "dice": dice(pred, ref),
        "sensitivity": sensitivity(pred, ref),
        "specificity": specificity(pred, ref),
        "hd95": hd95(pred, ref, spacing, hd95_definition),
        "volume_pred_ml": int(np.count_nonzero(pred)) * voxel_ml,
        "volume_ref_ml": int(np.count_nonzero(ref)) * voxel_ml,
    }


def case_metrics(pred_labels: np.ndarray, ref_labels: np.ndarray, spacing: Sequence[float],
                 pred_scheme: LabelScheme, ref_scheme: LabelScheme,
                 hd95_definition: str = "max", dice_only: bool = False) -> Dict[str, Dict[str, float]]:
    """Metrics for WT, TC and ET of one case given label maps of either scheme (only Dice with
    ``dice_only``: what a search over settings needs, without the surface distances)."""
    pr = labels_to_regions(pred_labels, pred_scheme)
    rr = labels_to_regions(ref_labels, ref_scheme)
    return {name: {"dice": dice(pr[i], rr[i])} if dice_only else region_metrics(pr[i], rr[i], spacing, hd95_definition)
            for i, name in enumerate(REGIONS)}


def summarize(rows: Sequence[Dict[str, Dict[str, float]]]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Mean, median and standard deviation (population) of every metric of every region."""
    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    for region in REGIONS:
        out[region] = {}
        for m in METRICS:
            vals = np.array([r[region][m] for r in rows], float)
            out[region][m] = {
                "mean": float(vals.mean()) if len(vals) else math.nan,
                "median": float(np.median(vals)) if len(vals) else math.nan,
                "std": float(vals.std()) if len(vals) else math.nan,
            }
    return out
