"""Reversible preprocessing: common grid, canonical orientation, optional 1 mm resampling,
brain crop and z-score normalisation, with an exact way back onto the reference input's grid.

Forward, in order:

1. Every sequence is brought onto the reference sequence's grid (T1ce by default): resampled in
   physical space (linear) when its geometry differs, optionally after rigid registration to the
   reference (Euler 3D, Mattes mutual information). Sequences whose fields of view do not overlap
   the reference are an error.
2. The stack is reoriented to one canonical orientation (identity direction cosines, ``LPS`` in
   ITK's code, as BraTS files read through SimpleITK) by permuting and flipping axes, which is
   exactly invertible.
3. Optionally, anisotropic grids are resampled to isotropic spacing (1 mm by default when asked).
4. The volume is cropped to the brain: the bounding box of voxels nonzero in any sequence,
   plus a margin.
5. Each sequence is z-scored over brain voxels only; voxels outside the brain are set to 0.

:meth:`InverseTransform.to_reference` undoes 4, 3 and 2 and returns an image with exactly the
reference input's geometry.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from .cases import SEQUENCES
from .errors import InputError
from .imageio import read_image, same_grid

log = logging.getLogger(__name__)

CANONICAL = "LPS"
ImageLike = Union[str, "sitk.Image"]


@dataclass
class PreprocessOptions:
    """Switches of the forward transform."""

    reference: str = "t1ce"
    isotropic: Optional[float] = None     # e.g. 1.0: resample anisotropic grids to this spacing (mm)
    register: bool = False                # rigid co-registration of the other sequences
    crop_margin: int = 4                  # voxels kept around the brain bounding box
    normalize: bool = True
    skull_zero_fraction: float = 0.15     # warn when fewer voxels than this are exactly zero


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


@dataclass
class Preprocessed:
    """The network input (channels in ``roles`` order) and the way back."""

    data: np.ndarray                 # (C, z, y, x) float32, cropped working grid
    roles: Tuple[str, ...]
    brain: np.ndarray                # (z, y, x) bool, brain mask on the cropped grid
    inverse: InverseTransform
    spacing: Tuple[float, float, float]  # working spacing in array (z, y, x) order, mm
    warnings: List[str] = field(default_factory=list)


def orientation_code(img: sitk.Image) -> str:
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(img.GetDirection())


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


def register_rigid(fixed: sitk.Image, moving: sitk.Image, seed: int = 0) -> sitk.Transform:
    """Rigid (Euler 3D) transform mapping ``fixed`` physical points into ``moving``, by Mattes MI."""
    init = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(),
                                             sitk.CenteredTransformInitializerFilter.GEOMETRY)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.05, seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3,
                                                 numberOfIterations=150, relaxationFactor=0.6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(init, inPlace=False)
    return reg.Execute(fixed, moving)


def _load(images: Mapping[str, ImageLike]) -> Tuple[Dict[str, sitk.Image], Dict[str, str]]:
    loaded, names = {}, {}
    for role, im in images.items():
        if isinstance(im, sitk.Image):
            if im.GetDimension() != 3 or im.GetNumberOfComponentsPerPixel() != 1:
                raise InputError(role, "a scalar 3D volume is expected")
            arr = sitk.GetArrayViewFromImage(im)
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise InputError(role, "contains NaN or Inf values")
            if not arr.any():
                raise InputError(role, "is all zero")
            loaded[role] = sitk.Cast(im, sitk.sitkFloat32)
            names[role] = role
        else:
            loaded[role] = read_image(im, "image")
            names[role] = str(im)
    return loaded, names


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


def brain_bbox(mask: np.ndarray, margin: int) -> Tuple[slice, slice, slice]:
    if not mask.any():
        box = [slice(0, n) for n in mask.shape]
    else:
        box = [slice(max(0, int(i.min()) - margin), min(n, int(i.max()) + 1 + margin))
               for i, n in zip(np.nonzero(mask), mask.shape)]
    return box[0], box[1], box[2]


def zscore(volume: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Z-score over ``mask`` voxels; voxels outside the mask become 0."""
    out = np.zeros(volume.shape, np.float32)
    vals = volume[mask]
    if vals.size:
        std = float(vals.std())
        out[mask] = (vals - float(vals.mean())) / (std if std > 1e-8 else 1.0)
    return out


def looks_skull_stripped(volume: np.ndarray, min_zero_fraction: float) -> Tuple[bool, float]:
    zero = float(np.count_nonzero(volume == 0)) / volume.size
    return zero >= min_zero_fraction, zero


def preprocess(images: Mapping[str, ImageLike], options: Optional[PreprocessOptions] = None,
               roles: Sequence[str] = SEQUENCES) -> Preprocessed:
    """Run the forward transform on per-role images; ``Preprocessed.inverse`` is the way back.

    Args:
        images: role (t1, t1ce, t2, flair) to a path or a SimpleITK image.
        options: reference role, isotropic spacing, registration, crop margin, normalisation.
        roles: the roles to use, in the network's channel order.
    """
    opt = options or PreprocessOptions()
    missing = [r for r in roles if r not in images or images[r] is None]
    if missing:
        raise InputError(missing[0], f"no {missing[0]} sequence given (needed: {', '.join(roles)})")
    if opt.reference not in roles:
        raise InputError(opt.reference, f"reference sequence {opt.reference} is not among {roles}")
    imgs, names = _load({r: images[r] for r in roles})
    ref = imgs[opt.reference]
    warnings: List[str] = []

    on_ref: Dict[str, sitk.Image] = {}
    for role in roles:
        img = imgs[role]
        if role == opt.reference:
            on_ref[role] = img
            continue
        frac = overlap_fraction(ref, img)
        if frac <= 0.0:
            raise InputError(names[role], f"does not overlap the field of view of the reference "
                                          f"{opt.reference} ({names[opt.reference]}): another patient or a wrong file?")
        if frac < 0.5:
            warnings.append(f"{names[role]}: only {frac:.0%} of its field of view overlaps the reference")
        if opt.register:
            tx = register_rigid(ref, img)
            on_ref[role] = resample_to(img, ref, tx)
        elif same_grid(img, ref):
            on_ref[role] = img
        else:
            on_ref[role] = resample_to(img, ref)

    orientation = orientation_code(ref)
    canon = {r: sitk.DICOMOrient(on_ref[r], CANONICAL) for r in roles}
    canonical_grid = canon[opt.reference]
    working_grid = canonical_grid
    if opt.isotropic and not np.allclose(canonical_grid.GetSpacing(), opt.isotropic, rtol=0.02):
        working_grid = isotropic_grid(canonical_grid, opt.isotropic)
        canon = {r: resample_to(canon[r], working_grid) for r in roles}

    arrays = [sitk.GetArrayFromImage(canon[r]) for r in roles]
    for role in roles:
        ok, zero = looks_skull_stripped(sitk.GetArrayViewFromImage(imgs[role]), opt.skull_zero_fraction)
        if not ok:
            warnings.append(f"{names[role]}: does not look skull-stripped (only {zero:.0%} of voxels are zero); "
                            "the models were trained on skull-stripped brains")
    brain_full = np.zeros(arrays[0].shape, bool)
    for a in arrays:
        brain_full |= a != 0
    bbox = brain_bbox(brain_full, opt.crop_margin)
    brain = brain_full[bbox]
    data = np.stack([a[bbox] for a in arrays]).astype(np.float32)
    if opt.normalize:
        data = np.stack([zscore(c, brain) for c in data])
    for w in warnings:
        log.warning(w)
    inverse = InverseTransform(reference=_geometry_only(ref), orientation=orientation,
                               canonical=_geometry_only(canonical_grid),
                               working=_geometry_only(working_grid), bbox=bbox)
    sx, sy, sz = (float(s) for s in working_grid.GetSpacing())
    spacing = (sz, sy, sx)
    return Preprocessed(data=data, roles=tuple(roles), brain=brain, inverse=inverse,
                        spacing=spacing, warnings=warnings)


def _geometry_only(img: sitk.Image) -> sitk.Image:
    g = sitk.Image(img.GetSize(), sitk.sitkUInt8)
    g.CopyInformation(img)
    return g


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
        share = sitk.GetArrayFromImage(sitk.Resample(mask, inverse.working, sitk.Transform(), sitk.sitkLinear, 0.0))
        take = share > best
        out[take], best[take] = v, share[take]
    return out[inverse.bbox]
