"""Synthetic brain tumor cases that look like skull-stripped BraTS MRI, made without a network.

Anatomy comes from the MNI ICBM152 2009a template and its grey and white matter maps, which ship
inside the ``nilearn`` wheel (read from its package folder; nilearn is not imported). Each case:

* maps the template onto the BraTS grid (240 x 240 x 155, 1 mm, SRI24-like geometry) with a
  random similarity transform (scale 0.85-0.95, rotation up to 6 degrees, shift up to 6 mm) and
  a smooth random deformation, plus the mass effect of the tumor pushing tissue outward;
* draws a tumor of random size, shape and position in the hemispheres: peritumoral edema (ED)
  around a tumor core whose rim enhances (ET) around a necrotic centre (NCR); about one case in
  ten has no enhancement;
* gives each tissue a contrast per sequence (edema bright on T2 and FLAIR, enhancing rim bright
  on T1ce, necrosis dark on T1 and T1ce, CSF dark on FLAIR), then texture, a smooth multiplicative
  bias field, Rician-like noise inside the brain and a Gaussian blur; background stays exactly 0.

Files are written in BraTS 2021 layout and labels (0, 1, 2, 4), int16 images and a uint8 seg.
Case ``i`` of seed ``s`` depends only on ``(s, i)``: the same seed gives the same files, and
``--n 10`` starts with the five cases of ``--n 5``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .. import extras
from ..errors import InputError, PathLike
from ..labels import SCHEMES
from ..read.cases import SEQUENCES, case_file_name
from ..write.images import write_image

BRATS_SIZE = (240, 240, 155)          # x, y, z
BRATS_ORIGIN = (0.0, -239.0, 0.0)
TEMPLATE_BRAIN_CENTRE = np.array([0.0, 17.0, 5.0])  # LPS mm, centre of the template's brain box

# Mean intensity (arbitrary units, WM on T1 = 1) per tissue and sequence.
_CONTRAST = {
    #          CSF   GM    WM    NCR   ED    ET
    "t1":    (0.30, 0.70, 1.00, 0.40, 0.62, 0.72),
    "t1ce":  (0.32, 0.72, 1.00, 0.35, 0.65, 1.55),
    "t2":    (1.60, 0.85, 0.55, 1.35, 1.25, 0.95),
    "flair": (0.20, 0.85, 0.65, 0.90, 1.45, 1.05),
}
_TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


@dataclass
class PhantomCase:
    case_id: str
    images: Dict[str, sitk.Image]   # int16, per sequence
    seg: sitk.Image                 # uint8, brats2021 labels
    info: Dict


def _template_dir() -> str:
    extras.require("phantoms")
    return os.path.join(extras.package_folder("nilearn", "has no package folder holding the MNI template"),
                        "datasets", "data")


@lru_cache(maxsize=1)
def template() -> sitk.Image:
    """Tissue probabilities (CSF, GM, WM) of the MNI template as one 3-component image."""
    folder = _template_dir()
    read = {k: sitk.ReadImage(os.path.join(folder, f)) for k, f in _TEMPLATE_FILES.items()}
    arr = {k: sitk.GetArrayFromImage(v).astype(np.float32) / 255.0 for k, v in read.items()}
    brain = (arr["t1"] > 0).astype(np.float32)
    gm, wm = arr["gm"] * brain, arr["wm"] * brain
    total = np.maximum(gm + wm, 1.0)  # renormalise where GM + WM exceed 1
    gm, wm = gm / total, wm / total
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    img = sitk.GetImageFromArray(np.stack([csf, gm, wm], -1), isVector=True)
    img.CopyInformation(read["t1"])
    return img


def brats_grid() -> sitk.Image:
    g = sitk.Image(BRATS_SIZE, sitk.sitkUInt8)
    g.SetOrigin(BRATS_ORIGIN)
    return g


def rician(vol: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``vol`` as a magnitude image with complex Gaussian noise of ``sigma`` (Rician-distributed)."""
    n1 = rng.standard_normal(vol.shape, dtype=np.float32) * np.float32(sigma)
    n2 = rng.standard_normal(vol.shape, dtype=np.float32) * np.float32(sigma)
    return np.sqrt((vol + n1) ** 2 + n2 ** 2)


def _smooth_noise(rng: np.random.Generator, shape: Tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean, unit-max smooth random field."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return n / (np.abs(n).max() + 1e-8)


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    ax, ay, az = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _deformation(rng: np.random.Generator, grid: sitk.Image, centre: np.ndarray,
                 radius: float, push: float) -> sitk.Transform:
    """Smooth random displacement plus radial mass effect around ``centre`` (physical mm)."""
    step = 6.0
    size = [int(np.ceil(s / step)) + 1 for s in grid.GetSize()]
    field = np.zeros(size[::-1] + [3])
    for c in range(3):
        field[..., c] = _smooth_noise(rng, tuple(size[::-1]), 2.0) * rng.uniform(1.0, 3.0)
    zz, yy, xx = np.meshgrid(*[np.arange(n) * step for n in size[::-1]], indexing="ij")
    origin = np.array(grid.GetOrigin())
    pts = np.stack([xx + origin[0], yy + origin[1], zz + origin[2]], -1)
    rel = pts - centre
    r = np.linalg.norm(rel, axis=-1, keepdims=True)
    # A point at distance r shows tissue that came from r - m(r): tissue pushed outwards.
    field += -rel * push * np.exp(-(r / (1.8 * radius)) ** 2)
    img = sitk.GetImageFromArray(field, isVector=True)
    img.SetOrigin(origin.tolist())
    img.SetSpacing([step] * 3)
    return sitk.DisplacementFieldTransform(sitk.Cast(img, sitk.sitkVectorFloat64))


def _tumor(rng: np.random.Generator, shape: Tuple[int, int, int], centre_idx: np.ndarray,
           brain: np.ndarray) -> Tuple[np.ndarray, Dict]:
    """Label map (brats2021) of one tumor inside ``brain`` (array z, y, x)."""
    r_wt = rng.uniform(14.0, 34.0)
    r_tc = r_wt * rng.uniform(0.4, 0.7)
    rim = rng.uniform(2.0, 5.0)
    enhancing = rng.random() > 0.1
    half = int(np.ceil(r_wt * 1.6)) + 2
    lo = np.maximum(centre_idx - half, 0)
    hi = np.minimum(centre_idx + half + 1, shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    bshape = tuple(hi - lo)
    coords = np.stack(np.meshgrid(*[np.arange(a, b, dtype=np.float32) for a, b in zip(lo, hi)],
                                  indexing="ij"), -1) - centre_idx
    axes_wt = rng.uniform(0.75, 1.25, 3)
    core_shift = rng.uniform(-0.25, 0.25, 3) * (r_wt - r_tc)
    axes_tc = rng.uniform(0.8, 1.2, 3)
    d_wt = np.linalg.norm(coords / axes_wt, axis=-1) / r_wt
    d_tc = np.linalg.norm((coords - core_shift) / axes_tc, axis=-1) / r_tc
    d_wt += 0.35 * _smooth_noise(rng, bshape, 4.0)
    d_tc += 0.25 * _smooth_noise(rng, bshape, 3.0)
    labels = np.zeros(shape, np.uint8)
    sub = np.zeros(bshape, np.uint8)
    s = SCHEMES["brats2021"]
    sub[d_wt < 1.0] = s.ed
    core = d_tc < 1.0
    if enhancing:
        inner = d_tc < 1.0 - rim / r_tc
        sub[core] = s.et
        sub[inner] = s.ncr
    else:
        sub[core] = s.ncr
    sub[~brain[box]] = 0
    labels[box] = sub
    info = {"wt_radius_mm": round(float(r_wt), 2), "tc_radius_mm": round(float(r_tc), 2),
            "rim_mm": round(float(rim), 2) if enhancing else 0.0, "enhancing": bool(enhancing)}
    return labels, info


def _bias(rng: np.random.Generator, shape: Tuple[int, ...], strength: float) -> np.ndarray:
    """Smooth multiplicative bias field exp(f(z) + g(y) + h(x)) with quadratic f, g, h."""
    out = np.zeros(shape, np.float32)
    for axis, n in enumerate(shape):
        t = np.linspace(-1, 1, n, dtype=np.float32)
        a, b = rng.uniform(-1, 1, 2) * strength
        prof = a * t + b * t * t
        sh = [1, 1, 1]
        sh[axis] = n
        out = out + prof.reshape(sh)
    return np.exp(out)


def _render(rng: np.random.Generator, probs: np.ndarray, brain: np.ndarray, labels: np.ndarray,
            grid: sitk.Image) -> Dict[str, sitk.Image]:
    """Each sequence from tissue probabilities (CSF, GM, WM) and tumor labels: its contrast,
    texture, bias field, blur, Rician noise and a scanner-like gain, inside the brain's box."""
    idx = np.argwhere(brain)
    lo, hi = idx.min(0), idx.max(0) + 1
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    p = probs[box]
    bmask = brain[box]
    lab = labels[box]
    s = SCHEMES["brats2021"]
    tumor_masks = [lab == s.ncr, lab == s.ed, lab == s.et]
    texture = 1.0 + 0.06 * _smooth_noise(rng, bmask.shape, 1.5)
    tumor_texture = 1.0 + 0.12 * _smooth_noise(rng, bmask.shape, 2.0)
    images = {}
    for seq in SEQUENCES:
        c = np.array(_CONTRAST[seq], np.float32) * rng.uniform(0.93, 1.07, 6).astype(np.float32)
        vol = (p[..., 0] * c[0] + p[..., 1] * c[1] + p[..., 2] * c[2]) * texture
        for k, m in enumerate(tumor_masks):
            vol[m] = c[3 + k] * tumor_texture[m]
        vol *= _bias(rng, vol.shape, rng.uniform(0.05, 0.25))
        img = sitk.GetImageFromArray(vol.astype(np.float32))
        img = sitk.SmoothingRecursiveGaussian(img, float(rng.uniform(0.4, 1.0)))
        vol = sitk.GetArrayFromImage(img)
        vol = rician(vol, rng.uniform(0.015, 0.04), rng)
        gain = rng.uniform(600, 1400)  # scanner-like arbitrary intensity scale
        full = np.zeros(brain.shape, np.int16)
        full[box] = np.where(bmask, np.clip(np.round(vol * gain), 1, 32767), 0).astype(np.int16)
        out = sitk.GetImageFromArray(full)
        out.CopyInformation(grid)
        images[seq] = out
    return images


def make_case(seed: int, index: int) -> PhantomCase:
    """Build case ``index`` of ``seed`` in memory."""
    rng = np.random.default_rng([int(seed), int(index)])
    grid = brats_grid()
    centre_b = np.array(grid.TransformContinuousIndexToPhysicalPoint(
        [(n - 1) / 2.0 for n in BRATS_SIZE]))
    scale = rng.uniform(0.85, 0.95)
    rot = _rotation(rng, 6.0)
    shift = rng.uniform(-6, 6, 3)
    affine = sitk.AffineTransform(3)
    affine.SetMatrix((rot / scale).ravel().tolist())
    affine.SetCenter(centre_b.tolist())
    affine.SetTranslation((TEMPLATE_BRAIN_CENTRE - centre_b + shift).tolist())

    # A first, undeformed look on a 3 mm grid picks the tumor centre in white matter and the
    # brain's bounding box, so that the full-resolution resampling covers only that box.
    tmpl = template()
    coarse_grid = sitk.Image([int(np.ceil(n / 3.0)) for n in BRATS_SIZE], sitk.sitkUInt8)
    coarse_grid.SetOrigin(BRATS_ORIGIN)
    coarse_grid.SetSpacing([3.0] * 3)
    coarse = sitk.GetArrayFromImage(sitk.Resample(tmpl, coarse_grid, affine, sitk.sitkLinear, 0.0))
    inner = ndimage.binary_erosion(coarse.sum(-1) > 0.5, iterations=4) & (coarse[..., 2] > 0.6)
    cand = np.argwhere(inner)
    pick = cand[rng.integers(len(cand))] * 3 + rng.integers(0, 3, 3)
    centre_idx = np.minimum(pick, np.array(BRATS_SIZE[::-1]) - 1)
    centre_phys = np.array(grid.TransformIndexToPhysicalPoint([int(i) for i in centre_idx[::-1]]))
    push = rng.uniform(0.1, 0.45)
    deform = _deformation(rng, grid, centre_phys, radius=20.0, push=push)
    composite = sitk.CompositeTransform([affine, deform])
    cidx = np.argwhere(coarse.sum(-1) > 0.01)
    lo = np.maximum(cidx.min(0) * 3 - 12, 0)
    hi = np.minimum(cidx.max(0) * 3 + 15, np.array(BRATS_SIZE[::-1]))
    sub = sitk.Image([int(v) for v in (hi - lo)[::-1]], sitk.sitkUInt8)
    sub.SetOrigin(grid.TransformIndexToPhysicalPoint([int(v) for v in lo[::-1]]))
    probs = np.zeros(tuple(BRATS_SIZE[::-1]) + (3,), np.float32)
    probs[tuple(slice(a, b) for a, b in zip(lo, hi))] = sitk.GetArrayFromImage(
        sitk.Resample(tmpl, sub, composite, sitk.sitkLinear, 0.0))  # z, y, x, (CSF, GM, WM)
    brain = probs.sum(-1) > 0.5
    labels, info = _tumor(rng, brain.shape, centre_idx, brain)
    images = _render(rng, probs, brain, labels, grid)
    seg = sitk.GetImageFromArray(labels)
    seg.CopyInformation(grid)
    info.update({"seed": int(seed), "index": int(index), "scale": round(float(scale), 4),
                 "mass_effect": round(float(push), 3),
                 "centre_voxel_xyz": [int(i) for i in centre_idx[::-1]]})
    return PhantomCase(case_id=f"Synth_{seed}_{index:04d}", images=images, seg=seg, info=info)


def write_case(case: PhantomCase, outdir: PathLike) -> str:
    """Write a case folder in BraTS 2021 layout; returns the folder."""
    folder = os.path.join(os.fspath(outdir), case.case_id)
    os.makedirs(folder, exist_ok=True)
    for seq, img in case.images.items():
        write_image(img, os.path.join(folder, case_file_name(case.case_id, seq)))
    write_image(case.seg, os.path.join(folder, case_file_name(case.case_id, "seg")))
    return folder


def generate(outdir: PathLike, n: int, seed: int = 0, start: int = 0,
             progress: Optional[Callable[[int, int], None]] = None) -> List[str]:
    """Write ``n`` cases (indices ``start`` .. ``start + n - 1``) of ``seed`` into ``outdir``."""
    extras.require("phantoms")  # before any folder is made
    out = os.fspath(outdir)
    if os.path.exists(out) and not os.path.isdir(out):
        raise InputError(out, "exists and is not a folder")
    os.makedirs(out, exist_ok=True)
    folders = []
    for k, i in enumerate(range(start, start + n)):
        folders.append(write_case(make_case(seed, i), out))
        if progress:
            progress(k + 1, n)
    return folders
