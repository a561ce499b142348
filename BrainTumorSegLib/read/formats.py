"""The image formats by file name: the extensions read and written, and those whose header keeps
its data in a separate file (which files an input reads, which an output writes). Needs no image
library, so that code naming files (finding a case's files, training from cached arrays) imports
none."""
from __future__ import annotations

import os
from typing import List, Optional

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


# the data file SimpleITK writes beside a detached header: (compressed, uncompressed) suffixes
_DATA_SUFFIXES = {".mhd": (".zraw", ".raw"), ".nhdr": (".raw.gz", ".raw")}


def written_files(path: PathLike, compress: bool = True) -> List[str]:
    """Every file writing an image to ``path`` makes: the path itself and, for a detached header,
    its data file beside it (named as SimpleITK names it, whatever the case of the extension)."""
    p = os.fspath(path)
    ext = image_extension(p)
    if ext not in DETACHED:
        return [p]
    return [p, p[: -len(ext)] + _DATA_SUFFIXES[ext][0 if compress else 1]]


def read_files(path: PathLike) -> List[str]:
    """Every file reading ``path`` reads: the path itself and the data files a MetaImage or NRRD
    header names (ElementDataFile, data file; a LIST's files, not a numbered pattern's), beside it
    unless the header gives a full path."""
    p = os.fspath(path)
    key_of = {".mha": "elementdatafile", ".mhd": "elementdatafile", ".nrrd": "data file", ".nhdr": "data file"}
    ext = image_extension(p)
    if ext not in key_of or not os.path.isfile(p):
        return [p]
    try:
        with open(p, "rb") as f:
            lines = f.read(65536).decode("latin-1").splitlines()
    except OSError:
        return [p]
    names: List[str] = []
    for k, line in enumerate(lines):
        if not line.strip() and ext in (".nrrd", ".nhdr"):
            break  # a NRRD header ends at its first blank line
        key, sep, value = line.partition("=" if key_of[ext] == "elementdatafile" else ":")
        if not sep or key.strip().lower() not in (key_of[ext], key_of[ext].replace(" ", "")):  # NRRD: either spelling
            continue
        value = value.strip()
        if value.upper().startswith("LIST"):
            names = [n.strip() for n in lines[k + 1:] if n.strip()]
        elif value.upper() != "LOCAL" and "%" not in value:
            names = [value]
        break
    folder = os.path.dirname(os.path.abspath(p))
    return [p, *(os.path.join(folder, n) for n in names)]
