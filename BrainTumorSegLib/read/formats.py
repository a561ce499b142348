"""The image formats by file name: the extensions read and written, and those whose header keeps
its data in a separate file (which files an input reads, which an output writes). Needs no image
library, so that code naming files (finding a case's files, training from cached arrays) imports
none."""
from __future__ import annotations

import os
from typing import Dict, List, NamedTuple, Optional

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
    its data file beside it (named as SimpleITK names it)."""
    p = os.fspath(path)
    ext = image_extension(p)
    if ext not in DETACHED:
        return [p]
    return [p, p[: -len(ext)] + _DATA_SUFFIXES[ext][0 if compress else 1]]


class Header(NamedTuple):
    """A MetaImage or NRRD header: its fields (MetaImage's keys as written; NRRD's in lower case,
    ``datafile`` spelled ``data file``), the byte offset where it ends (where attached voxels
    begin), and the file names listed after a ``LIST`` data file."""

    fields: Dict[str, str]
    offset: int
    listed: List[str]


_HEADER_BYTES = 65536  # headers are a few hundred bytes; a file whose header would be longer is not parsed further


def read_header(path: PathLike) -> Header:
    """The header of a MetaImage (``key = value`` up to ElementDataFile) or NRRD file (``key:
    value`` up to the first blank line); empty for other formats or a file that cannot be read."""
    p = os.fspath(path)
    ext = image_extension(p)
    fields: Dict[str, str] = {}
    if ext not in (".mha", ".mhd", ".nrrd", ".nhdr"):
        return Header(fields, 0, [])
    metaimage = ext in (".mha", ".mhd")
    try:
        with open(p, "rb") as f:
            for raw in f:
                line = raw.decode("latin-1").strip()
                if not metaimage and not line:
                    break
                key, sep, value = line.partition("=" if metaimage else ":")
                if sep and not line.startswith("#"):
                    key = key.strip() if metaimage else key.strip().lower().replace("datafile", "data file")
                    fields[key] = value.strip()
                data_field = key == ("ElementDataFile" if metaimage else "data file")
                if (data_field and (metaimage or value.strip().upper().startswith("LIST"))) or f.tell() > _HEADER_BYTES:
                    break  # MetaImage's last field; NRRD's LIST, the file names after it
            offset = f.tell()
            data = fields.get("ElementDataFile" if metaimage else "data file", "")
            listed = ([n.strip() for n in f.read(_HEADER_BYTES).decode("latin-1").splitlines() if n.strip()]
                      if data.upper().startswith("LIST") else [])
    except OSError:
        return Header({}, 0, [])
    return Header(fields, offset, listed)


def read_files(path: PathLike) -> List[str]:
    """Every file reading ``path`` reads: the path itself and the data files a MetaImage or NRRD
    header names (ElementDataFile, data file; a LIST's files, not a numbered pattern's), beside it
    unless the header gives a full path."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        return [p]
    header = read_header(p)
    value = header.fields.get("ElementDataFile", header.fields.get("data file", "LOCAL"))
    names = header.listed if value.upper().startswith("LIST") else [] if value.upper() == "LOCAL" or "%" in value \
        else [value]
    folder = os.path.dirname(os.path.abspath(p))
    return [p, *(os.path.join(folder, n) for n in names)]
