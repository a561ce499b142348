"""Postprocessing of predicted tumor labels. Every step can be switched on or off.

* ``min_et_voxels`` (off by default, 0): when the total enhancing-tumor volume is below this
  many voxels, relabel it as necrotic core. BraTS 2021 teams used 200-750 voxels to avoid
  false-positive ET in cases without enhancement; clinically a tiny enhancing focus matters,
  so it is off unless the user or the model's manifest asks for it.
* ``min_component_voxels`` (0 = off): remove connected components (26-connected) of the whole
  tumor smaller than this many voxels.
* ``fill_core_holes`` (off by default): fill holes fully enclosed in the tumor core (TC) with
  necrotic core; holes are background or edema voxels not connected to the outside of the core.

Both sizes count voxels of 1 mm^3, the BraTS grid on which models choose them: on a grid of other
voxels (``voxel_mm3``, e.g. a clinical T1ce of 0.9 x 0.9 x 5.5 mm) the same volume is meant, not
the same count.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Optional

import numpy as np

from ..labels import LabelScheme, get_scheme, labels_to_regions


@dataclass
class PostprocessOptions:
    min_et_voxels: int = 0
    min_component_voxels: int = 0
    fill_core_holes: bool = False

    def to_dict(self) -> Dict:
        return asdict(self)


def remove_small_components(mask: np.ndarray, min_voxels: float) -> np.ndarray:
    """Keep the 26-connected components of ``mask`` with at least ``min_voxels`` voxels."""
    if min_voxels <= 1 or not mask.any():
        return mask.copy()
    # SimpleITK's labelling, not scipy's: the same components, and scipy stays out of segment's
    # imports; imported here, as training from a pack on a machine without SimpleITK imports this module
    import SimpleITK as sitk

    lab = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), True))
    sizes = np.bincount(lab.ravel())
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[lab]


def postprocess(labels: np.ndarray, scheme: "str | LabelScheme",
                options: Optional[PostprocessOptions] = None, voxel_mm3: float = 1.0) -> np.ndarray:
    """Apply the switched-on steps to a label map of ``scheme`` whose voxels hold ``voxel_mm3``
    each (the thresholds are 1 mm^3 voxels); returns a new uint8 array."""
    options = options or PostprocessOptions()
    s = get_scheme(scheme)
    out = np.asarray(labels, np.uint8).copy()
    if options.min_component_voxels > 1:
        wt = labels_to_regions(out, s)[0]
        out[wt & ~remove_small_components(wt, options.min_component_voxels / voxel_mm3)] = 0
    if options.fill_core_holes:
        from scipy import ndimage

        wt, tc, et = labels_to_regions(out, s)
        filled = ndimage.binary_fill_holes(tc)
        out[filled & ~tc] = s.ncr
    if options.min_et_voxels > 0:
        et = out == s.et
        if 0 < int(et.sum()) * voxel_mm3 < options.min_et_voxels:
            out[et] = s.ncr
    return out
