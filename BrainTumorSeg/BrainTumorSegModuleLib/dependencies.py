"""What the library needs inside Slicer, beyond what Slicer ships (numpy, SimpleITK, vtk).

torch comes from the PyTorch extension's installer (it picks a build for the GPU and driver);
the rest through pip, on the user's confirmation, never at import time. Slicer's own SimpleITK
and numpy are never replaced.
"""
from __future__ import annotations

import importlib.util
from typing import List

# (import name, pip requirement); kept equal to pyproject.toml minus what Slicer ships (tested)
PIP_PACKAGES = (("nibabel", "nibabel>=4.0"), ("safetensors", "safetensors>=0.4"),
                ("scipy", "scipy>=1.9"), ("matplotlib", "matplotlib>=3.5"))
SHIPPED_BY_SLICER = ("numpy", "SimpleITK")
FROM_PYTORCH_EXTENSION = ("torch",)
ONLY_FOR_SYNTHETIC_CASES = ("nilearn",)  # the phantom generator's template; the self-test needs it


def missing_pip_requirements(include_phantoms: bool = False) -> List[str]:
    reqs = [req for mod, req in PIP_PACKAGES if importlib.util.find_spec(mod) is None]
    if include_phantoms and importlib.util.find_spec("nilearn") is None:
        reqs.append("nilearn>=0.10")
    return reqs


def torch_missing() -> bool:
    return importlib.util.find_spec("torch") is None
