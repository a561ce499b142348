"""Qt-free parts of the BrainTumorSeg Slicer module: volume roles, background jobs, MRML logic.

Nothing here imports Qt, so CI runs it against real MRML through ``slicer-core``. The library
(``BrainTumorSegLib``) sits beside this package in an installed extension and at the repository
root in a source checkout; the latter is put on ``sys.path`` here when it is not importable.
"""
from __future__ import annotations

import importlib.util
import os
import sys


def library_root() -> str:
    """The folder holding ``BrainTumorSegLib``: beside this package when installed as a Slicer
    extension, the repository root in a source checkout."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for d in (here, os.path.dirname(here)):
        if os.path.exists(os.path.join(d, "BrainTumorSegLib", "__init__.py")):
            return d
    raise RuntimeError(f"BrainTumorSegLib not found beside {here}")


if importlib.util.find_spec("BrainTumorSegLib") is None:
    sys.path.insert(0, library_root())
