"""The models a user can pick: every bundle and ensemble in the search folders
(:func:`installed`) and their size on disk; nothing here loads torch (Slicer's model list).
"""
from __future__ import annotations

import os
from typing import Dict, List

from ..errors import InputError, PathLike
from .bundles import ENSEMBLE_FORMAT, installed_folders
from .ensembles import describe, members


def size_on_disk(folder: PathLike) -> int:
    """Bytes of a bundle's files, or of an ensemble's own manifest and its members' files."""
    f = os.fspath(folder)
    total = sum(os.path.getsize(os.path.join(f, n)) for n in os.listdir(f) if os.path.isfile(os.path.join(f, n)))
    if describe(f).get("format") == ENSEMBLE_FORMAT:
        total += sum(size_on_disk(m) for m in members(f))
    return total


def installed() -> List[Dict]:
    """Manifests of every bundle and ensemble found in the search folders (first found wins per name)."""
    found = []
    for name, folder in installed_folders():
        try:
            m = describe(folder)
        except InputError as exc:
            m = {"id": name, "error": str(exc)}
        m["path"] = folder
        m["name"] = name
        found.append(m)
    return found
