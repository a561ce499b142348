"""Augmentation of training patches: the named sets of spatial and intensity changes, and the
clinical ones (thick slices, tighter brain masks, partial fields of view).

``standard`` is the set every model so far was trained with. ``nnunet`` follows nnU-Net's default
3D set as its paper's supplementary information on data augmentation and its trainer's defaults
(nnUNetTrainerV2, batchgenerators) give it (Isensee F et al., nnU-Net: a self-configuring method
for deep learning-based biomedical image segmentation, Nature Methods 18:203-211, 2021,
doi:10.1038/s41592-020-01008-z): rotation about every axis (+-30 degrees) and scaling (0.7-1.4),
each with probability 0.2; Gaussian noise 0.1; blur 0.2; contrast 0.15; simulated low resolution
0.25; gamma 0.3, inverted gamma 0.1; mirroring on every axis; plus an elastic deformation
(probability 0.2), which nnU-Net has but leaves off for 3D.
Apart from either set, :func:`remove_enhancement` (``TrainConfig.without_enhancement``) turns a
patch's enhancing tumor into non-enhancing core, in image and labels, and :func:`fill_with_fluid`
(``TrainConfig.fluid_cores``) fills a patch's core with the case's cerebrospinal fluid, as a cyst,
and :func:`make_core_solid` (``TrainConfig.solid_cores``) makes it a solid core that does not
enhance, as a low-grade glioma's; :func:`carve_tumor` (``TrainConfig.carved_tumors``) puts another
case's tumor into the patch (CarveMix).
Departures: brightness stays ours (every channel scaled by 0.9-1.1 and shifted by +-0.1, where
nnU-Net scales by 0.75-1.25 with probability 0.15); the smooth bias field and the sequence
dropping of ``standard`` stay on; upsampling after the low-resolution step is trilinear (nnU-Net:
cubic).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..errors import InputError
from ..preprocess.normalise import zscore


@dataclass(frozen=True)
class Augmentation:
    """Probabilities (per patch) and ranges of one augmentation set."""
    rotate_p: float = 0.2
    all_axes: bool = False                       # rotate about every axis (else the axial axis only)
    max_angle: float = 0.5                       # radians
    scale: Tuple[float, float] = (0.85, 1.15)
    scale_p: float = 0.0                         # > 0: scaling drawn apart from rotation, with this probability
    elastic_p: float = 0.0
    gamma_p: float = 0.15
    inverted_gamma_p: float = 0.0
    contrast_p: float = 0.0
    low_resolution_p: float = 0.0
    noise_p: float = 0.15
    blur_p: float = 0.1


AUGMENTATIONS: Dict[str, Augmentation] = {
    "standard": Augmentation(),
    "nnunet": Augmentation(all_axes=True, max_angle=math.radians(30), scale=(0.7, 1.4), scale_p=0.2, elastic_p=0.2,
                           gamma_p=0.3, inverted_gamma_p=0.1, contrast_p=0.15, low_resolution_p=0.25, noise_p=0.1,
                           blur_p=0.2),
}


def vary_brain_mask(data: np.ndarray, classes: np.ndarray, rng: np.random.Generator,
                    guide_channels: int = 0) -> np.ndarray:
    """The case as if its brain mask were 1-2 voxels tighter (another skull stripping's
    convention, e.g. HD-BET's on a clinical scan): the rim outside the eroded mask set to zero and
    each sequence z-scored again inside it. Tumor voxels stay inside, as a brain extraction keeps
    them. The cached data is already z-scored; z-scoring is affine, so doing it again over the new
    mask gives what z-scoring the original intensities over that mask would."""
    n = data.shape[0] - guide_channels  # a first stage's probabilities (last) stay as they are
    mask = ndimage.binary_erosion(data[:n].any(0), iterations=int(rng.integers(1, 3))) | (classes > 0)
    return np.concatenate([np.stack([zscore(d.astype(np.float32), mask) for d in data[:n]]),
                           data[n:].astype(np.float32)])


def simulate_thick_slices(x: np.ndarray, rng: np.random.Generator, spacing: Sequence[float],
                          thickness_mm: Tuple[float, float] = (3.0, 7.0)) -> np.ndarray:
    """Each sequence, with probability 0.6, as if acquired in thick slices along a random axis of
    its own (as clinical sequences are, each on its own grid) and resampled back: averaged over
    slabs of 3-7 mm, interpolated linearly, zeroed outside the brain again."""
    brain = x.any(0)
    for c in range(x.shape[0]):
        if rng.random() >= 0.6:
            continue
        axis = int(rng.integers(3))
        factor = rng.uniform(*thickness_mm) / spacing[axis]
        if factor < 1.2:
            continue
        small = list(x.shape[1:])
        small[axis] = max(2, int(round(small[axis] / factor)))
        t = torch.from_numpy(np.ascontiguousarray(x[c]))[None, None]
        low = F.interpolate(t, size=small, mode="area")
        x[c] = F.interpolate(low, size=list(x.shape[1:]), mode="trilinear", align_corners=False)[0, 0].numpy() * brain
    return x


def augmentation_set(name: str) -> Augmentation:
    """The set called ``name``; a one-line error for an unknown one."""
    if name not in AUGMENTATIONS:
        raise InputError(None, f"unknown augmentation {name!r}; choose one of {', '.join(AUGMENTATIONS)}")
    return AUGMENTATIONS[name]


def _rotation(angles: np.ndarray) -> np.ndarray:
    """The 3 x 3 rotation about the three axes by ``angles`` in turn."""
    m = np.eye(3)
    for axis, angle in enumerate(angles):
        c, s = math.cos(angle), math.sin(angle)
        r = np.eye(3)
        i, j = [k for k in range(3) if k != axis]
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        m = r @ m
    return m


def _spatial(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, aug: Augmentation) -> Tuple[np.ndarray, np.ndarray]:
    """Rotation, scaling and elastic deformation, one resampling for all of them (linear for the
    channels, nearest for the classes)."""
    theta = None
    if not aug.all_axes:  # the standard set's draws, in its order
        if rng.random() < aug.rotate_p:
            angle = rng.uniform(-aug.max_angle, aug.max_angle)
            scale = rng.uniform(*aug.scale)
            c, s = math.cos(angle) / scale, math.sin(angle) / scale
            theta = np.array([[1 / scale, 0, 0], [0, c, -s], [0, s, c]])
    else:
        rotate, rescale = rng.random() < aug.rotate_p, rng.random() < aug.scale_p
        if rotate or rescale:
            m = _rotation(rng.uniform(-aug.max_angle, aug.max_angle, 3)) if rotate else np.eye(3)
            theta = m / (rng.uniform(*aug.scale) if rescale else 1.0)
    elastic = aug.elastic_p > 0 and rng.random() < aug.elastic_p
    if theta is None and not elastic:
        return x, y
    full = torch.zeros(1, 3, 4, dtype=torch.float32)  # affine_grid's (x, y, z) order: the standard set's axis is x
    full[0, :, :3] = torch.from_numpy(theta if theta is not None else np.eye(3))
    grid = F.affine_grid(full, [1, 1, *y.shape], align_corners=False)
    if elastic:  # a smooth displacement: noise on a coarse lattice, upsampled, up to about 2 voxels
        coarse = torch.from_numpy(rng.normal(0, 1, (1, 3) + tuple(max(2, n // 16) for n in y.shape)).astype(np.float32))
        field = F.interpolate(coarse, size=list(y.shape), mode="trilinear", align_corners=False)[0]
        amplitude = rng.uniform(0.5, 2.0) * 2 / torch.tensor(list(y.shape)[::-1], dtype=torch.float32)
        grid = grid + field.permute(1, 2, 3, 0) * amplitude
    x = F.grid_sample(torch.from_numpy(x)[None], grid, mode="bilinear", align_corners=False)[0].numpy()
    y = F.grid_sample(torch.from_numpy(y[None, None].astype(np.float32)), grid, mode="nearest",
                      align_corners=False)[0, 0].numpy().astype(np.uint8)
    return x, y


def _low_resolution(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each channel, with probability 0.5, taken to 0.5-1 times its resolution (nearest) and back (linear)."""
    for c in range(x.shape[0]):
        if rng.random() < 0.5:
            zoom = rng.uniform(0.5, 1.0)
            t = torch.from_numpy(np.ascontiguousarray(x[c]))[None, None]
            low = F.interpolate(t, size=[max(2, int(round(n * zoom))) for n in x.shape[1:]], mode="nearest")
            x[c] = F.interpolate(low, size=list(x.shape[1:]), mode="trilinear", align_corners=False)[0, 0].numpy()
    return x


def _gamma(v: np.ndarray, rng: np.random.Generator, inverted: bool) -> np.ndarray:
    """Gamma 0.7-1.5 on the channel's own range; ``inverted``: on the negated channel."""
    v = -v if inverted else v
    lo, hi = v.min(), v.max()
    if hi > lo:
        v = lo + (hi - lo) * ((v - lo) / (hi - lo)) ** rng.uniform(0.7, 1.5)
    return -v if inverted else v


def augment(x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
            domain_randomization: bool = False, thick_slices_spacing: Optional[Sequence[float]] = None,
            guide_channels: int = 0, augmentation: str = "standard") -> Tuple[np.ndarray, np.ndarray]:
    """Flips, rotation/scaling (and elastic deformation), intensity shift/scale, contrast, gamma,
    noise, blur, low resolution, bias field, sequence dropping, as ``augmentation`` (a key of
    ``AUGMENTATIONS``) draws them from ``rng``. With ``thick_slices_spacing`` (the data's spacing
    in mm), half the samples also get :func:`simulate_thick_slices`. The last ``guide_channels``
    (a first stage's probabilities) move with the sequences but keep their values."""
    aug = augmentation_set(augmentation)
    for ax in (1, 2, 3):
        if rng.random() < 0.5:
            x = np.flip(x, ax)
            y = np.flip(y, ax - 1)
    x, y = np.ascontiguousarray(x), np.ascontiguousarray(y)
    x, y = _spatial(x, y, rng, aug)
    guide = x[x.shape[0] - guide_channels:] if guide_channels else None
    x = x[:x.shape[0] - guide_channels]
    if thick_slices_spacing is not None and rng.random() < 0.5:
        x = simulate_thick_slices(x, rng, thick_slices_spacing)
    brain = x.any(0)
    for c in range(x.shape[0]):
        x[c] = x[c] * rng.uniform(0.9, 1.1) + rng.uniform(-0.1, 0.1)
        if aug.contrast_p and rng.random() < aug.contrast_p:  # contrast about the mean, within the old range
            lo, hi, mean = x[c].min(), x[c].max(), x[c].mean()
            x[c] = np.clip((x[c] - mean) * rng.uniform(0.75, 1.25) + mean, lo, hi)
        if aug.inverted_gamma_p and rng.random() < aug.inverted_gamma_p:
            x[c] = _gamma(x[c], rng, inverted=True)
        if rng.random() < aug.gamma_p:
            x[c] = _gamma(x[c], rng, inverted=False)
    if rng.random() < aug.noise_p:
        x = x + rng.normal(0, rng.uniform(0, 0.1), x.shape).astype(np.float32)
    if rng.random() < aug.blur_p:
        x = ndimage.gaussian_filter(x, (0,) + (rng.uniform(0.5, 1.0),) * 3).astype(np.float32)
    if aug.low_resolution_p and rng.random() < aug.low_resolution_p:
        x = _low_resolution(x, rng)
    if rng.random() < 0.15:  # smooth multiplicative bias field
        zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in y.shape], indexing="ij")
        a = rng.uniform(-0.3, 0.3, 3)
        x = x * np.exp(a[0] * zz + a[1] * yy + a[2] * xx)[None]
    if domain_randomization:  # random contrast per channel: rescaled, sometimes inverted, inside the brain
        for c in range(x.shape[0]):
            if rng.random() < 0.3:
                x[c] = np.where(brain, (1 if rng.random() < 0.7 else -1) * x[c] * rng.uniform(0.5, 1.5), x[c])
    if rng.random() < 0.1:  # drop one sequence, as if it were missing
        x[rng.integers(x.shape[0])] = 0
    elif rng.random() < 0.1:  # one sequence covering only a slab of the brain (a partial field of view)
        x = cover_partially(x, int(rng.integers(x.shape[0])), rng)
    if guide is not None:
        x = np.concatenate([x, guide])
    return x.astype(np.float32), y


def remove_enhancement(x: np.ndarray, y: np.ndarray, t1: int, t1ce: int) -> Tuple[np.ndarray, np.ndarray]:
    """The patch as if its tumor did not take up contrast: the T1ce inside the enhancing tumor
    replaced by the T1 there (shifted by the difference of their medians over the brain outside the
    tumor; both are z-scored over the brain), and the enhancing tumor labelled non-enhancing core
    (class 1), which is what BraTS labels a core that does not enhance. It shows the network cores
    without enhancement, which high-grade cases rarely do and low-grade ones mostly are. A patch
    without enhancing tumor, or whose T1 is missing (zero), comes back as it is."""
    et = y == 3
    if not et.any() or not x[t1].any():
        return x, y
    outside = (y == 0) & (x[t1ce] != 0) & (x[t1] != 0)
    shift = float(np.median(x[t1ce][outside]) - np.median(x[t1][outside])) if outside.any() else 0.0
    x = x.copy()
    x[t1ce][et] = x[t1][et] + shift
    return x, np.where(et, 1, y).astype(y.dtype)


def fluid_intensity(data: np.ndarray, classes: np.ndarray, t2: int, flair: int) -> Optional[np.ndarray]:
    """Per channel, the median of the case's cerebrospinal fluid: brain voxels outside the tumor
    among the brightest 2 % on T2 and darker than the brain's median on FLAIR (ventricles, sulci).
    None when fewer than 100 are found (a sequence missing, a brain without visible fluid)."""
    brain = data.any(0) & (classes == 0)
    if brain.sum() < 1000:
        return None
    t2v, flv = data[t2][brain].astype(np.float32), data[flair][brain].astype(np.float32)
    if not t2v.any() or not flv.any():
        return None
    fluid = (t2v > np.percentile(t2v, 98)) & (flv < np.median(flv))
    if fluid.sum() < 100:
        return None
    return np.median(data[:, brain][:, fluid].astype(np.float32), 1)


def fill_with_fluid(x: np.ndarray, y: np.ndarray, fluid: Optional[np.ndarray],
                    rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """The patch as if its tumor core were a fluid-filled cyst: the necrotic / non-enhancing core
    (class 1; half the time without its outer voxel, left as a solid rim) takes the intensity of
    ``fluid`` (:func:`fluid_intensity`: the case's own fluid, bright on T2 and dark on FLAIR),
    shifted per channel by a normal draw of sd 0.2 (a cyst's protein content), with noise of sd
    0.1, blended into its surroundings over about a voxel. The labels stay: BraTS labels a cyst
    inside a tumor as core. The training cases' necroses are bright on FLAIR, and networks trained
    on them took a cyst for cerebrospinal fluid, outside the tumor. A patch with fewer than 50 core
    voxels, or no ``fluid``, comes back as it is."""
    core = y == 1
    if rng.integers(2):
        core = ndimage.binary_erosion(core)
    if core.sum() < 50 or fluid is None:
        return x, y
    value = (fluid + rng.normal(0, 0.2, len(fluid))).astype(np.float32)[:, None, None, None]
    filled = value + rng.normal(0, 0.1, x.shape).astype(np.float32)
    weight = np.maximum(ndimage.gaussian_filter(core.astype(np.float32), 0.6), core)
    return (x * (1 - weight) + filled * weight).astype(np.float32), y


def edema_intensity(data: np.ndarray, classes: np.ndarray) -> Optional[np.ndarray]:
    """Per channel, the median of the case's edema (class 2). None when it has fewer than 100
    edema voxels."""
    edema = classes == 2
    if edema.sum() < 100:
        return None
    return np.median(data[:, edema].astype(np.float32), 1)


def make_core_solid(x: np.ndarray, y: np.ndarray, edema: Optional[np.ndarray], rng: np.random.Generator,
                    t1: int, t1ce: int, t2: int, flair: int) -> Tuple[np.ndarray, np.ndarray]:
    """The patch as if its tumor core were a solid mass that does not enhance, as a low-grade
    glioma's: the whole core (necrosis and enhancing tumor) takes the case's ``edema`` intensity
    (:func:`edema_intensity`) moved as the low-grade and non-enhancing cores of the shared cases
    differ from their edema (darker on T1 by 0.3-1.4 and on T1ce about as much, brighter on T2 by
    0-1.2, on FLAIR within -0.7 to +0.5; a high-grade necrosis is brighter than its edema on T2 and
    FLAIR alike), with a smooth texture and noise, blended into its surroundings over about a
    voxel; the core is labelled non-enhancing core (class 1). Networks trained on high-grade cores
    labelled such cores edema. A patch with fewer than 50 core voxels, or no ``edema``, comes back
    as it is; a missing sequence (zero) stays missing, and channels other than the four are left
    alone."""
    core = (y == 1) | (y == 3)
    if core.sum() < 50 or edema is None:
        return x, y
    darker = rng.uniform(0.3, 1.4)
    shift = np.zeros(len(edema), np.float32)
    shift[[t1, t1ce, t2, flair]] = [-darker, -darker + rng.normal(0, 0.1), rng.uniform(0.0, 1.2),
                                    rng.uniform(-0.7, 0.5)]
    sign = np.zeros(len(edema), np.float32)
    sign[[t1, t1ce, t2, flair]] = [-1, -1, 1, 1]  # darker on T1 where brighter on T2
    texture = ndimage.gaussian_filter(rng.normal(0, 1, y.shape).astype(np.float32), 1.5)
    texture /= max(float(texture.std()), 1e-6)
    amplitude = (sign * rng.uniform(0.1, 0.3, len(edema))).astype(np.float32)
    solid = ((edema + shift)[:, None, None, None] + amplitude[:, None, None, None] * texture[None]
             + rng.normal(0, 0.1, x.shape).astype(np.float32))
    weight = np.maximum(ndimage.gaussian_filter(core.astype(np.float32), 0.6), core)
    changed = np.zeros(len(x), bool)
    changed[[t1, t1ce, t2, flair]] = True
    changed &= x.reshape(len(x), -1).any(1)  # a missing sequence (all zero) stays missing
    out = np.where(changed[:, None, None, None], x * (1 - weight) + solid * weight, x)
    return out.astype(np.float32), np.where(core, 1, y).astype(y.dtype)


def carve_tumor(x: np.ndarray, y: np.ndarray, donor_x: np.ndarray, donor_y: np.ndarray,
                rng: np.random.Generator, spacing: Sequence[float],
                reach_mm: Tuple[float, float] = (-4.0, 10.0)) -> Tuple[np.ndarray, np.ndarray]:
    """CarveMix (Zhang X et al., CarveMix: A Simple Data Augmentation Method for Brain Lesion
    Segmentation, MICCAI 2021, doi:10.1007/978-3-030-87193-2_19, arXiv:2108.06883, section 2):
    the region of the donor patch within a distance ``d`` of its tumor (``d`` drawn from
    ``reach_mm``; below zero, the tumor shrunk by ``-d``) replaces the patch there, images and
    labels alike, so that one case's tumor is shown in another brain. Both patches cover the same
    place of co-registered brains (the caller crops them so); the region is kept to voxels inside
    both brains. As in the paper, the patch's own tumor outside the region stays. Departures: the
    reach is drawn uniformly in millimetres (not from the paper's distribution of the region's
    size), and only the donor patch's tumor is carved, not the whole donor case's. A donor patch
    with fewer than 50 tumor voxels comes back as the patch unchanged."""
    tumor = donor_y > 0
    if tumor.sum() < 50:
        return x, y
    d = rng.uniform(*reach_mm)
    if d >= 0:
        region = ndimage.distance_transform_edt(~tumor, sampling=spacing) <= d
    else:
        region = ndimage.distance_transform_edt(tumor, sampling=spacing) > -d
    region &= x.any(0) & donor_x.any(0)
    return (np.where(region[None], donor_x, x).astype(np.float32),
            np.where(region, donor_y, y).astype(y.dtype))


def cover_partially(x: np.ndarray, channel: int, rng: np.random.Generator) -> np.ndarray:
    """``channel`` zeroed outside a random slab (30-80 % of the patch along a random axis), as a
    sequence whose field of view misses part of the brain."""
    axis = int(rng.integers(3))
    n = x.shape[axis + 1]
    width = int(round(n * rng.uniform(0.3, 0.8)))
    start = int(rng.integers(0, n - width + 1))
    keep = np.zeros(n, bool)
    keep[start:start + width] = True
    shape = [1, 1, 1]
    shape[axis] = n
    x[channel] = x[channel] * keep.reshape(shape)
    return x
