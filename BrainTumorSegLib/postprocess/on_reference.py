"""Labels from probabilities, cleaned up (``cleanup``) and moved onto the reference input's grid,
with the entropy map when asked. On the reference's own grid the labels are made there and moved
back exactly; on a resampled working grid the probabilities go back (linearly) and the labels are
made on the reference grid.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import SimpleITK as sitk

from ..predict import output_kinds
from ..preprocess.transform import Preprocessed
from ..read.images import same_grid, voxel_volume_mm3
from .cleanup import PostprocessOptions, postprocess


def entropy_map(probs: np.ndarray, kind: str) -> np.ndarray:
    """Voxel-wise uncertainty in [0, 1] (see :mod:`output_kinds`)."""
    return output_kinds.kind(kind).entropy(probs)


def probabilities_to_labels(probs: np.ndarray, kind: str, scheme: str) -> np.ndarray:
    return output_kinds.kind(kind).to_labels(probs, scheme)


def labels_on_reference(probs: np.ndarray, pre: Preprocessed, kind: str, scheme: str, post: PostprocessOptions,
                         uncertainty: bool) -> Tuple[sitk.Image, Optional[sitk.Image]]:
    """Labels (and the entropy map) on the reference input's grid. On the reference's own grid the
    labels are made there and moved back exactly; on a resampled working grid the probabilities
    go back (linearly) and the labels are made on the reference grid."""
    inv = pre.inverse
    if same_grid(inv.working, inv.canonical):
        labels = probabilities_to_labels(probs, kind, scheme)
        labels[~pre.brain] = 0
        out = inv.to_reference(postprocess(labels, scheme, post, voxel_volume_mm3(inv.working)).astype(np.uint8), labels=True)
        return out, inv.to_reference(entropy_map(probs, kind), labels=False) if uncertainty else None
    if uncertainty:
        ref_probs = np.stack([inv.to_reference_array(p, labels=False) for p in probs])
        labels = probabilities_to_labels(ref_probs, kind, scheme)
        labels[inv.to_reference_array(pre.brain.astype(np.uint8), labels=True) == 0] = 0
        out = sitk.GetImageFromArray(postprocess(labels, scheme, post, voxel_volume_mm3(inv.reference)).astype(np.uint8))
        out.CopyInformation(inv.reference)
        unc = sitk.GetImageFromArray(entropy_map(ref_probs, kind))
        unc.CopyInformation(inv.reference)
        return out, unc
    return _labels_near_tumor(probs, pre, kind, scheme, post), None


def _labels_near_tumor(probs: np.ndarray, pre: Preprocessed, kind: str, scheme: str,
                       post: PostprocessOptions) -> sitk.Image:
    """The same labels as resampling everything, computed only where the tumor can be: a label is
    a threshold on probabilities, and a linearly interpolated value passes it only next to a
    working voxel that passes it, so outside the region around the working grid's labels every
    reference voxel is background. The region keeps a background margin, so clean-up (components,
    holes, the ET volume) sees exactly what it would on the whole grid."""
    inv = pre.inverse
    full = np.zeros(inv.canonical.GetSize()[::-1], np.uint8)
    found = np.nonzero(probabilities_to_labels(probs, kind, scheme))
    if found[0].size:
        region = inv.canonical_region(tuple(slice(int(i.min()), int(i.max()) + 1) for i in found))  # type: ignore[arg-type]
        ref_probs = np.stack([inv.to_canonical_region(p, region, labels=False) for p in probs])
        labels = probabilities_to_labels(ref_probs, kind, scheme)
        labels[inv.to_canonical_region(pre.brain.astype(np.uint8), region, labels=True) == 0] = 0
        full[region] = postprocess(labels, scheme, post, voxel_volume_mm3(inv.canonical))
    return inv.from_canonical(full)


def brain_mask_on_reference(pre: Preprocessed) -> sitk.Image:
    """HD-BET's mask when the input was stripped, else the brain the preprocessing found."""
    return pre.brain_mask if pre.brain_mask is not None else pre.inverse.to_reference(pre.brain.astype(np.uint8))
