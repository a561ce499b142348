"""The working grid and the exact way back: the reference input's grid reoriented to one
canonical orientation (identity direction cosines, ``LPS`` in ITK's code, as BraTS files read
through SimpleITK: an exact permutation and flip of axes), optionally resampled to an isotropic
spacing (a model's own, or 1 mm for a thick-slice reference with ``isotropic="auto"``), cropped to
the brain. :meth:`InverseTransform.to_reference` undoes the crop, the resampling and the
reorientation and returns an image with exactly the reference input's geometry.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..read.images import same_grid

CANONICAL = "LPS"


def parse_spacing(value: Union[str, float, None]) -> Union[str, float, None]:
    """``isotropic`` checked: None, ``auto``, ``off``, or a positive spacing in mm (a number or its text)."""
    if value is None or value in ("auto", "off"):
        return value
    try:
        mm = float(value)
    except ValueError:
        mm = -1.0
    if mm <= 0:
        raise InputError("--isotropic", f"must be auto, off or a spacing in mm, not {value!r}")
    return mm


def choose_spacing(model_spacing: Optional[float], isotropic: Union[str, float, None],
                   reference: sitk.Image) -> Tuple[Optional[float], str]:
    """The working spacing and why: the model's own if it declares one; else 1 mm for ``auto``
    when the reference is not about 1 mm in every direction; else ``isotropic`` (a number) or none.
    """
    isotropic = parse_spacing(isotropic)
    if model_spacing:
        return float(model_spacing), f"the model works at {model_spacing:g} mm"
    if isotropic in (None, "off"):
        return None, "the reference's own grid (isotropic off)"
    if isotropic == "auto":
        sp = reference.GetSpacing()
        if np.allclose(sp, 1.0, rtol=0.1):
            return None, f"the reference is about 1 mm already ({_fmt(sp)} mm)"
        return 1.0, f"the reference is {_fmt(sp)} mm, not about 1 mm"
    assert isinstance(isotropic, float)
    return isotropic, f"{isotropic:g} mm asked for"


def _fmt(spacing: Sequence[float]) -> str:
    return " x ".join(f"{v:.2g}" for v in spacing)


@dataclass
class InverseTransform:
    """What is needed to put an array from the preprocessed grid back onto the input grid."""

    reference: sitk.Image           # the reference input (geometry only is used)
    orientation: str                # its closest orientation code
    canonical: sitk.Image           # reference grid reoriented (geometry only)
    working: sitk.Image             # canonical grid, resampled if isotropic was asked
    bbox: Tuple[slice, slice, slice]  # crop in the working grid, array (z, y, x) order

    @property
    def working_shape(self) -> Tuple[int, int, int]:
        return tuple(self.working.GetSize()[::-1])

    def uncrop(self, array: np.ndarray, fill: float = 0) -> np.ndarray:
        """Paste a cropped array (..., z, y, x) back into the full working grid."""
        lead = array.shape[:-3]
        out = np.full(lead + self.working_shape, fill, dtype=array.dtype)
        out[(Ellipsis,) + self.bbox] = array
        return out

    def to_reference(self, array: np.ndarray, labels: bool = True, fill: float = 0,
                     cropped: bool = True) -> sitk.Image:
        """Map a 3D array on the (cropped) working grid onto the reference input grid.

        Labels use nearest-neighbour interpolation when a resampling step was used; continuous
        maps use linear interpolation. The result has exactly the reference geometry.
        """
        if array.ndim != 3:
            raise ValueError("to_reference takes one 3D array; map channels one by one")
        full = self.uncrop(array, fill) if cropped else array
        img = sitk.GetImageFromArray(full)
        img.CopyInformation(self.working)
        if not same_grid(self.working, self.canonical):
            interp = sitk.sitkNearestNeighbor if labels else sitk.sitkLinear
            img = sitk.Resample(img, self.canonical, sitk.Transform(), interp, fill, img.GetPixelID())
        img = sitk.DICOMOrient(img, self.orientation)
        img.CopyInformation(self.reference)
        return img

    def to_reference_array(self, array: np.ndarray, labels: bool = True, fill: float = 0) -> np.ndarray:
        return sitk.GetArrayFromImage(self.to_reference(array, labels, fill))

    def canonical_region(self, box: Tuple[slice, slice, slice], margin: int = 1) -> Tuple[slice, slice, slice]:
        """The part of the canonical grid (array order) that linear interpolation from ``box`` of the
        cropped working grid reaches (one working voxel around it), ``margin`` voxels wider."""
        lo = [b.start + c.start - 1 for b, c in zip(box, self.bbox)]
        hi = [b.stop + c.start for b, c in zip(box, self.bbox)]
        corners = [self.canonical.TransformPhysicalPointToContinuousIndex(
                   self.working.TransformContinuousIndexToPhysicalPoint([float(v) for v in corner[::-1]]))
                   for corner in itertools.product(*zip(lo, hi))]
        idx = np.array(corners)[:, ::-1]  # (z, y, x)
        start = np.maximum(np.floor(idx.min(0)).astype(int) - margin, 0)
        stop = np.minimum(np.ceil(idx.max(0)).astype(int) + 1 + margin, self.canonical.GetSize()[::-1])
        return slice(int(start[0]), int(stop[0])), slice(int(start[1]), int(stop[1])), slice(int(start[2]), int(stop[2]))

    def to_canonical_region(self, array: np.ndarray, region: Tuple[slice, slice, slice],
                            labels: bool = True) -> np.ndarray:
        """A 3D array on the cropped working grid resampled onto ``region`` of the canonical grid:
        the same values :meth:`to_reference` gives there, computed for that part only."""
        grid = sitk.Image([r.stop - r.start for r in region[::-1]], sitk.sitkUInt8)
        grid.SetSpacing(self.canonical.GetSpacing())
        grid.SetDirection(self.canonical.GetDirection())
        grid.SetOrigin(self.canonical.TransformIndexToPhysicalPoint([r.start for r in region[::-1]]))
        img = sitk.GetImageFromArray(self.uncrop(array))
        img.CopyInformation(self.working)
        interp = sitk.sitkNearestNeighbor if labels else sitk.sitkLinear
        return sitk.GetArrayFromImage(sitk.Resample(img, grid, sitk.Transform(), interp, 0, img.GetPixelID()))

    def from_canonical(self, array: np.ndarray) -> sitk.Image:
        """A whole array on the canonical grid, put back in the reference's orientation and geometry."""
        img = sitk.GetImageFromArray(array)
        img.CopyInformation(self.canonical)
        img = sitk.DICOMOrient(img, self.orientation)
        img.CopyInformation(self.reference)
        return img


def physical_bounds(img: sitk.Image) -> Tuple[np.ndarray, np.ndarray]:
    """Axis-aligned physical bounding box (min, max) of the image's voxel-edge corners."""
    size = np.array(img.GetSize(), float)
    corners = []
    for c in np.ndindex(2, 2, 2):
        idx = np.where(np.array(c) == 0, -0.5, size - 0.5)
        corners.append(img.TransformContinuousIndexToPhysicalPoint(idx.tolist()))
    pts = np.array(corners)
    return pts.min(0), pts.max(0)


def overlap_fraction(a: sitk.Image, b: sitk.Image) -> float:
    """Volume of the intersection of both physical bounding boxes over the smaller box."""
    amin, amax = physical_bounds(a)
    bmin, bmax = physical_bounds(b)
    inter = np.clip(np.minimum(amax, bmax) - np.maximum(amin, bmin), 0, None).prod()
    smaller = min((amax - amin).prod(), (bmax - bmin).prod())
    return float(inter / smaller) if smaller > 0 else 0.0


def resample_to(img: sitk.Image, grid: sitk.Image, transform: Optional[sitk.Transform] = None,
                interpolator: int = sitk.sitkLinear) -> sitk.Image:
    return sitk.Resample(img, grid, transform or sitk.Transform(), interpolator, 0.0, sitk.sitkFloat32)


def isotropic_grid(img: sitk.Image, spacing: float) -> sitk.Image:
    """An empty image over the same physical extent as ``img`` with isotropic ``spacing``."""
    old_sp = np.array(img.GetSpacing())
    size = np.maximum(1, np.round(np.array(img.GetSize()) * old_sp / spacing)).astype(int)
    # Keep the centre of the first voxel's edge: shift origin by half the voxel size change.
    d = np.array(img.GetDirection()).reshape(3, 3)
    origin = np.array(img.GetOrigin()) + d @ ((spacing - old_sp) / 2.0)
    grid = sitk.Image([int(s) for s in size], sitk.sitkUInt8)
    grid.SetSpacing([float(spacing)] * 3)
    grid.SetOrigin(origin.tolist())
    grid.SetDirection(img.GetDirection())
    return grid


def geometry_only(img: sitk.Image) -> sitk.Image:
    g = sitk.Image(img.GetSize(), sitk.sitkUInt8)
    g.CopyInformation(img)
    return g


def share_on_working(mask: sitk.Image, inverse: InverseTransform) -> np.ndarray:
    """The share of each voxel of the whole (uncropped) working grid that a float mask on the
    canonical grid covers (linear interpolation)."""
    return sitk.GetArrayFromImage(sitk.Resample(mask, inverse.working, sitk.Transform(), sitk.sitkLinear, 0.0))


def labels_to_working(labels: sitk.Image, inverse: InverseTransform) -> np.ndarray:
    """Bring a label map on the reference grid onto the cropped working grid (for training).

    On a resampled (e.g. coarser) working grid each value's mask is interpolated linearly and
    every voxel takes the value whose mask covers it most (background included; a tie goes to the
    lower value), so label volumes are kept rather than left to nearest neighbour's phase.
    """
    img = sitk.DICOMOrient(labels, CANONICAL)
    if same_grid(inverse.working, inverse.canonical):
        return sitk.GetArrayFromImage(img)[inverse.bbox]
    arr = sitk.GetArrayViewFromImage(img)
    values = np.unique(arr)
    best = np.full(inverse.working_shape, -1.0, np.float32)
    out = np.zeros(inverse.working_shape, arr.dtype)
    for v in values:
        mask = sitk.GetImageFromArray((arr == v).astype(np.float32))
        mask.CopyInformation(img)
        share = share_on_working(mask, inverse)
        take = share > best
        out[take], best[take] = v, share[take]
    return out[inverse.bbox]
