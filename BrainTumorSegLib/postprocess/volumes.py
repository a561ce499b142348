"""Tumor volumes in millilitres, per label and per region (WT, TC, ET).
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from ..labels import REGIONS, get_scheme, labels_to_regions


def volumes(labels: np.ndarray, scheme: str, voxel_ml: float) -> Dict[str, float]:
    s = get_scheme(scheme)
    out = {name: float(np.count_nonzero(labels == s.class_value(name))) * voxel_ml for name in ("NCR", "ED", "ET")}
    regions = labels_to_regions(labels, s)
    out.update({r: float(regions[i].sum()) * voxel_ml for i, r in enumerate(REGIONS)})
    return out
