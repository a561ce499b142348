"""The image formats by file name: the extensions read and written, and those whose header keeps
its data in a separate file. Needs no image library, so that code naming files (finding a case's
files, training from cached arrays) imports none."""
from __future__ import annotations

import os
from typing import Optional

from ..errors import PathLike

EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

# Formats that write a separate data file next to the header.
DETACHED = {".nhdr", ".mhd"}


def image_extension(path: PathLike) -> Optional[str]:
    """The supported extension of ``path`` (lower case), or None."""
    name = os.fspath(path).lower()
    for ext in EXTENSIONS:
        if name.endswith(ext):
            return ext
    return None


def strip_extension(name: str) -> str:
    """``name`` without its supported extension (unchanged without one)."""
    ext = image_extension(name)
    return name[: -len(ext)] if ext else name
