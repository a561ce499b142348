"""Intensities: the brain's bounding box, z-score over brain voxels only, and optional N4
bias-field correction inside the brain.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np


def brain_bbox(mask: np.ndarray, margin: int, multiple: int = 1) -> Tuple[slice, slice, slice]:
    """The box around ``mask`` plus ``margin`` voxels, each start moved down to a multiple of
    ``multiple`` (so that blocks of that many voxels from the start are the whole grid's blocks)."""
    if not mask.any():
        box = [slice(0, n) for n in mask.shape]
    else:
        box = [slice(max(0, int(i.min()) - margin) // multiple * multiple, min(n, int(i.max()) + 1 + margin))
               for i, n in zip(np.nonzero(mask), mask.shape)]
    return box[0], box[1], box[2]


def zscore(volume: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Z-score over ``mask`` voxels; voxels outside the mask become 0."""
    out = np.zeros(volume.shape, np.float32)
    vals = volume[mask].astype(np.float64)  # float32 sums overflow on values near 1e30 and lose tiny ones
    if vals.size:
        std = float(vals.std())
        scale = float(np.abs(vals).max())
        out[mask] = (vals - float(vals.mean())) / (std if std > 1e-6 * scale else 1.0)
    return out


def bias_correct(vol: np.ndarray, brain: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """N4 bias-field correction inside ``brain``, fitted on a grid of about 4 mm, applied at full size."""
    import SimpleITK as sitk  # here alone: training on cached arrays imports this module without it

    img = sitk.GetImageFromArray(vol.astype(np.float32))
    img.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    mask = sitk.GetImageFromArray(brain.astype(np.uint8))
    mask.CopyInformation(img)
    shrink = [max(1, int(round(4.0 / s))) for s in img.GetSpacing()]
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([50, 50, 30])
    n4.Execute(sitk.Shrink(img, shrink), sitk.Shrink(mask, shrink))
    field_full = sitk.Exp(n4.GetLogBiasFieldAsImage(img))
    out = sitk.GetArrayFromImage(img / field_full)
    return np.where(brain, out, 0).astype(np.float32)
