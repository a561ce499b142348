"""A pack: a recipe's cached training cases in one folder, compressed, to train where neither the raw
cases nor SimpleITK are (a lent GPU machine, to which only 64 MiB of the working tree travel).

Each case is its cache file's arrays (fp16 sequences, class labels, foreground samples, spacing)
stored again with zip compression, losslessly: a run from a pack draws exactly the patches a run
from the raw cases draws. ``pack.json`` gives each file's sha256, checked before any training.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Union

import numpy as np

from ..errors import InputError
from ..models.bundles import read_json, sha256_of
from ..read.cases import Case
from ..write.atomic import write_json
from .data import PREPARATION

PACK_FILE = "pack.json"
FORMAT = 1


@dataclass(frozen=True)
class PackedCase:
    """A case already cached: its id and its file in a pack (it stands where a :class:`Case` would)."""
    case_id: str
    path: str


TrainingCase = Union[Case, PackedCase]


@dataclass(frozen=True)
class Pack:
    """A pack's cases (files checked), their grid and ``pack.json`` itself."""
    cases: List[PackedCase]
    spacing: Optional[float]  # the working grid's spacing in mm (None: each case's own grid)
    document: Dict[str, Any]


def is_pack(folder: str) -> bool:
    """Whether ``folder`` is a pack (holds ``pack.json``) rather than a folder of cases."""
    return os.path.isfile(os.path.join(folder, PACK_FILE))


def check_new_folder(out_dir: str) -> None:
    """A pack goes to a new folder in an existing one."""
    if os.path.exists(out_dir):
        raise InputError(out_dir, "exists; a pack is written to a new folder")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out_dir))):
        raise InputError(out_dir, "output folder does not exist")


def write_pack(cached: Mapping[str, str], out_dir: str, spacing: Optional[float], about: Dict[str, Any]) -> str:
    """Write cached cases as a pack in the new folder ``out_dir`` (made whole or not at all).

    Args:
        cached: case id -> its cache file (``data.cache_case``), made without guide channels.
        out_dir: the pack's folder; must not exist.
        spacing: the spacing the cases were cached at (None: their own grid).
        about: fields for ``pack.json`` (recipe, how it was made).
    """
    check_new_folder(out_dir)
    staging = tempfile.mkdtemp(prefix=".pack-", dir=os.path.dirname(os.path.abspath(out_dir)))
    try:
        cases = {}
        for case_id, path in sorted(cached.items()):
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
            name = f"{case_id}-packed.npz"  # "<id>-<anything>.npz", as cache files are named
            np.savez_compressed(os.path.join(staging, name), **arrays)
            cases[case_id] = {"file": name, "sha256": sha256_of(os.path.join(staging, name))}
        write_json(os.path.join(staging, PACK_FILE), {"format": FORMAT, "spacing_mm": spacing,
                                                      "preparation": PREPARATION, **about, "cases": cases})
        umask = os.umask(0)  # mkdtemp makes an owner-only folder; give it the usual mode
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)
        os.rename(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def read_pack(pack_dir: str) -> Pack:
    """The cases of a pack, every file checked against its recorded sha256."""
    where = os.path.join(pack_dir, PACK_FILE)
    doc = read_json(where)
    entries = doc.get("cases") if isinstance(doc, dict) else None
    spacing = doc.get("spacing_mm") if isinstance(doc, dict) else None
    if not isinstance(entries, dict) or doc.get("format") != FORMAT or not entries or \
            not (spacing is None or isinstance(spacing, (int, float))) or \
            not all(os.path.basename(c) == c and isinstance(e, dict) and e.get("file") == f"{c}-packed.npz"
                    and "sha256" in e for c, e in entries.items()):
        raise InputError(where, f"is not a pack of format {FORMAT} with cases")
    if doc.get("preparation") != PREPARATION:
        raise InputError(where, f"holds cases prepared as {doc.get('preparation')!r}, not as this version "
                                f"prepares them ({PREPARATION!r}): pack them again")
    cases = []
    for case_id, entry in entries.items():
        path = os.path.join(pack_dir, entry["file"])
        if not os.path.isfile(path):
            raise InputError(path, "is missing from the pack")
        if sha256_of(path) != entry["sha256"]:
            raise InputError(path, "does not match the sha256 the pack records (changed or truncated)")
        cases.append(PackedCase(case_id, path))
    return Pack(cases, None if spacing is None else float(spacing), doc)
