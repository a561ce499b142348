"""Training data: case checks, the preprocessed cache, patch sampling (augmented by ``augmentation``).

SimpleITK (and the readers and preprocessing built on it) is imported only where raw cases are
read: training from a pack of cached cases (``pack``) needs numpy, scipy, matplotlib (the curves)
and torch alone.

Determinism: every random choice of sample ``i`` in epoch ``e`` comes from a generator seeded
with ``(seed, e, i)``, so a resumed run draws exactly the patches an uninterrupted one would.
"""
from __future__ import annotations

import hashlib
import io
import os
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import InputError
from ..labels import detect_scheme, labels_to_classes
from ..networks.base import SegmentationNetwork
from ..read.cases import SEQUENCES, Case
from ..write.atomic import replacing
from .augmentation import (
    augment,
    augmentation_set,
    carve_tumor,
    edema_intensity,
    fill_with_fluid,
    fluid_intensity,
    make_core_solid,
    remove_enhancement,
    vary_brain_mask,
)


def check_cases(cases: Sequence[Case], skip_bad: bool = False) -> List[Case]:
    """Keep cases with four readable sequences and a seg on the T1ce grid with BraTS labels."""
    import SimpleITK as sitk

    from ..read.images import read_image, same_grid

    good, bad = [], []
    for c in cases:
        try:
            c.require(SEQUENCES + ("seg",))
            ref = read_image(c.paths["t1ce"])
            seg = read_image(c.paths["seg"], "label")
            detect_scheme(sitk.GetArrayViewFromImage(seg), c.paths["seg"])
            if not same_grid(seg, ref):
                raise InputError(c.paths["seg"], "is not on the grid of the T1ce image")
            good.append(c)
        except InputError as exc:
            bad.append(f"{c.case_id}: {exc}")
    if bad and not skip_bad:
        raise InputError(None, f"{len(bad)} bad case(s): " + "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""))
    for b in bad:
        print(f"warning: skipping {b}", file=sys.stderr)
    if not good:
        raise InputError(None, "no usable training case")
    return good


# How cached cases are prepared; part of the cache key, so a change here rebuilds old caches.
PREPARATION = "auto, stripped on each sequence's grid, foreground per class, origin of the crop"


@dataclass(frozen=True)
class Guide:
    """Input channels a cascade's later stage trains on beside the sequences, made once per case
    when it is cached (:meth:`networks.cascade.CoarseToFine.guide`)."""

    key: str  # says which guide: another key, another cache file
    channels: Callable[[str, torch.Tensor], torch.Tensor]  # (case id, (C, z, y, x) sequences) -> (G, z, y, x)
    crop_multiple: int = 1  # the network's: the cached crop starts where segment's would

    @classmethod
    def made(cls, source: str, net: SegmentationNetwork, weights: str,
             channels: Callable[[str, torch.Tensor], torch.Tensor]) -> "Guide":
        """A guide keyed by where its channels come from (``source``: "own", "out-of-fold"), how
        ``net`` makes them (its ``guide_method``) and the digest of the ``weights`` that make them."""
        return cls(f"{source}:{net.guide_method}:{weights}", channels, net.crop_multiple)


def cache_case(case: Case, cache_dir: str, spacing: Optional[float] = None, guide: Optional[Guide] = None) -> str:
    """Preprocess one case once (at ``spacing`` mm when given): (C, z, y, x) float16 data, class
    labels, spacing; with ``guide``, its channels after the sequences. As ``segment`` does, a case
    saved straight from the scanner (a clinical case corrected in Slicer) is skull-stripped and
    co-registered first; BraTS-preprocessed cases are left as they are (the automatic checks find
    nothing to do)."""
    from ..preprocess.grid import labels_to_working
    from ..preprocess.transform import PreprocessOptions, preprocess
    from ..read.images import read_image

    multiple = guide.crop_multiple if guide else 1
    key = hashlib.sha256(("|".join(f"{r}={os.path.abspath(p)}:{os.path.getmtime(p)}"
                                   for r, p in sorted(case.paths.items())) + f"|spacing={spacing}|{PREPARATION}"
                          + (f"|guide={guide.key}" if guide else "")
                          + (f"|crop_multiple={multiple}" if multiple > 1 else "")).encode()
                         ).hexdigest()[:16]
    path = os.path.join(cache_dir, f"{case.case_id}-{key}.npz")
    if os.path.exists(path):
        return path
    pre = preprocess(case.sequences, PreprocessOptions(isotropic=spacing, register="auto", skull_strip="auto",
                                                       crop_multiple=multiple))
    for w in pre.warnings:
        print(f"warning: {case.case_id}: {w}", file=sys.stderr)
    seg_img = read_image(case.paths["seg"], "label")
    seg = labels_to_working(seg_img, pre.inverse)
    scheme = detect_scheme(seg, case.paths["seg"])
    classes = labels_to_classes(seg, scheme)
    fg, fg_class = [], []
    for k in range(1, int(classes.max()) + 1):  # up to 20,000 voxels of each class, so rare classes stay findable
        idx = np.argwhere(classes == k)
        if len(idx) > 20000:
            idx = idx[np.random.default_rng(k).choice(len(idx), 20000, replace=False)]
        fg.append(idx)
        fg_class.append(np.full(len(idx), k, np.uint8))
    data = pre.data
    if guide is not None:
        data = np.concatenate([data, guide.channels(case.case_id, torch.from_numpy(data)).cpu().numpy()])
    buf = io.BytesIO()
    np.savez(buf, data=data.astype(np.float16), classes=classes.astype(np.uint8),
             fg=np.concatenate(fg or [np.zeros((0, 3), np.int64)]).astype(np.int32),
             fg_class=np.concatenate(fg_class or [np.zeros(0, np.uint8)]), spacing=np.array(pre.spacing),
             origin=np.array([b.start for b in pre.inverse.bbox], np.int32))
    with replacing(path) as tmp, open(tmp, "wb") as f:
        f.write(buf.getvalue())
    return path


class CachedCase:
    def __init__(self, path: str) -> None:
        with np.load(path) as z:
            self.data = z["data"]
            self.classes = z["classes"]
            self.fg = z["fg"]
            self.fg_class = z["fg_class"]
            self.spacing = tuple(float(s) for s in z["spacing"])
            # where the crop begins on the working grid: the same voxel of two co-registered cases
            # (BraTS: one atlas) is origin + index in both
            self.origin = tuple(int(o) for o in z["origin"])
        self.case_id = os.path.basename(path).rsplit("-", 1)[0]

    @classmethod
    def like(cls, case: "CachedCase", data: np.ndarray) -> "CachedCase":
        """``case`` with other image data (same labels, foreground and spacing)."""
        new = cls.__new__(cls)
        new.__dict__.update(case.__dict__, data=data)
        return new


def _crop(arr: np.ndarray, start: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """Crop (..., z, y, x) at ``start`` with zero padding where the patch leaves the volume."""
    shape = arr.shape[-3:]
    out = np.zeros(arr.shape[:-3] + tuple(patch), arr.dtype)
    src, dst = [], []
    for s, p, n in zip(start, patch, shape):
        a, b = max(s, 0), min(s + p, n)
        src.append(slice(a, b))
        dst.append(slice(a - s, b - s))
    out[(Ellipsis,) + tuple(dst)] = arr[(Ellipsis,) + tuple(src)]
    return out


def patch_start(case: CachedCase, patch: Sequence[int], rng: np.random.Generator, fg_fraction: float) -> List[int]:
    """Where a patch of ``case`` begins; with probability ``fg_fraction`` it is centred (give or
    take a quarter patch) on a voxel of one tumor class, the class drawn uniformly among those the
    case has, so a small enhancing rim or a low-grade tumor's core is as often in view as the edema
    around it."""
    if len(case.fg) and rng.random() < fg_fraction:
        present = np.unique(case.fg_class)
        pool = case.fg[case.fg_class == present[rng.integers(len(present))]]
        centre = pool[rng.integers(len(pool))]
        return [int(c) - p // 2 + int(rng.integers(-p // 4, p // 4 + 1)) for c, p in zip(centre, patch)]
    return [int(rng.integers(min(0, n - p), max(0, n - p) + 1)) for n, p in zip(case.classes.shape, patch)]


def crop_patch(case: CachedCase, start: Sequence[int], patch: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """The patch of ``case`` beginning at ``start`` (zero outside the volume) and its classes."""
    return _crop(case.data, start, patch).astype(np.float32), _crop(case.classes, start, patch)


def sample_patch(case: CachedCase, patch: Sequence[int], rng: np.random.Generator,
                 fg_fraction: float) -> Tuple[np.ndarray, np.ndarray]:
    """A patch and its classes, where :func:`patch_start` puts it."""
    return crop_patch(case, patch_start(case, patch, rng, fg_fraction), patch)


def carve_patch(case: CachedCase, donor: CachedCase, start: Sequence[int], patch: Sequence[int],
                rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """The donor's patch beginning at ``start`` carved into ``case``'s patch of the same place
    (:func:`augmentation.carve_tumor`): the same working-grid voxel of co-registered brains, where
    each crop's ``origin`` puts it."""
    x, y = crop_patch(case, [s + d - c for s, d, c in zip(start, donor.origin, case.origin)], patch)
    return carve_tumor(x, y, *crop_patch(donor, start, patch), rng, case.spacing)


class PatchDataset(torch.utils.data.Dataset):
    def __init__(self, cache_files: Sequence[str], patch: Sequence[int], batches: int, seed: int,
                 fg_fraction: float, domain_randomization: bool, replay_files: Sequence[str] = (),
                 replay_fraction: float = 0.0, clinical_augmentation: bool = False,
                 weights: Optional[Sequence[float]] = None, guide_channels: int = 0,
                 augmentation: str = "standard", without_enhancement: float = 0.0, fluid_cores: float = 0.0,
                 fluid_without_enhancement: float = 0.0, solid_cores: float = 0.0, carved_tumors: float = 0.0,
                 donor_files: Sequence[str] = ()) -> None:
        augmentation_set(augmentation)  # an unknown name fails here, not at the first patch
        self.augmentation = augmentation
        self.files = list(cache_files)
        if weights is not None and len(weights) != len(self.files):
            raise ValueError(f"{len(weights)} case weights for {len(self.files)} cases")
        # None keeps the uniform draw (and the random stream of runs made before weights existed)
        self.p = None if weights is None else np.asarray(weights, float) / float(np.sum(weights))
        self.replay = list(replay_files)
        self.replay_fraction = replay_fraction if self.replay else 0.0
        self.patch = tuple(patch)
        self.n = batches
        self.seed = seed
        self.epoch = 0
        self.fg_fraction = fg_fraction
        self.dr = domain_randomization
        self.clinical = clinical_augmentation
        self.guide_channels = guide_channels
        self.without_enhancement = without_enhancement
        self.fluid_cores = fluid_cores
        self.fluid_without_enhancement = fluid_without_enhancement
        self.solid_cores = solid_cores
        self.carved_tumors = carved_tumors
        self.donors = list(donor_files)
        self._cache: Dict[str, CachedCase] = {}
        self._fluid: Dict[str, Optional[np.ndarray]] = {}
        self._edema: Dict[str, Optional[np.ndarray]] = {}

    def __len__(self) -> int:
        return self.n

    def _case(self, f: str) -> CachedCase:
        if f not in self._cache:
            self._cache[f] = CachedCase(f)
        return self._cache[f]

    def _fluid_of(self, case: CachedCase) -> Optional[np.ndarray]:
        if case.case_id not in self._fluid:
            self._fluid[case.case_id] = fluid_intensity(case.data, case.classes, SEQUENCES.index("t2"),
                                                        SEQUENCES.index("flair"))
        return self._fluid[case.case_id]

    def _edema_of(self, case: CachedCase) -> Optional[np.ndarray]:
        if case.case_id not in self._edema:
            self._edema[case.case_id] = edema_intensity(case.data, case.classes)
        return self._edema[case.case_id]

    def _carved(self, case: CachedCase, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        donor = self._case(self.donors[int(rng.integers(len(self.donors)))])
        return carve_patch(case, donor, patch_start(donor, self.patch, rng, 1.0), self.patch, rng)

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, i])
        if rng.random() < self.replay_fraction:
            case = self._case(self.replay[int(rng.integers(len(self.replay)))])
        elif self.p is None:
            case = self._case(self.files[int(rng.integers(len(self.files)))])
        else:
            case = self._case(self.files[int(rng.choice(len(self.files), p=self.p))])
        fluid = self._fluid_of(case) if self.fluid_cores else None  # of the cached case, before any new mask
        edema = self._edema_of(case) if self.solid_cores else None
        if self.clinical and rng.random() < 0.3:
            case = CachedCase.like(case, vary_brain_mask(case.data, case.classes, rng, self.guide_channels))
        if self.carved_tumors and self.donors and rng.random() < self.carved_tumors:
            x, y = self._carved(case, rng)
        else:
            x, y = sample_patch(case, self.patch, rng, self.fg_fraction)
        # drawn only when asked for, so that runs without them keep their random stream
        without = self.without_enhancement
        if self.fluid_cores and rng.random() < self.fluid_cores:
            x, y = fill_with_fluid(x, y, fluid, rng)
            without = max(without, self.fluid_without_enhancement)  # a cyst whose wall does not enhance
        elif self.solid_cores and rng.random() < self.solid_cores:
            x, y = make_core_solid(x, y, edema, rng, *(SEQUENCES.index(s) for s in ("t1", "t1ce", "t2", "flair")))
        if without and rng.random() < without:
            x, y = remove_enhancement(x, y, SEQUENCES.index("t1"), SEQUENCES.index("t1ce"))
        x, y = augment(x, y, rng, self.dr, case.spacing if self.clinical else None, self.guide_channels,
                       self.augmentation)
        return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
