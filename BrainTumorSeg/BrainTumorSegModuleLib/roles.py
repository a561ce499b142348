"""Which loaded volume is which MRI sequence, from its name (pure Python)."""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence, Tuple

ROLES = ("t1", "t1ce", "t2", "flair")
ROLE_TITLES = {"t1": "T1", "t1ce": "T1ce", "t2": "T2", "flair": "FLAIR"}
# a case may lack its T1 or T2 (their channel is then left empty); the library's own lists, copied
# because this module loads before the library's dependencies are installed (a test keeps them equal)
OPTIONAL_ROLES = ("t1", "t2")
REQUIRED_ROLES = tuple(r for r in ROLES if r not in OPTIONAL_ROLES)

_FLAIR = {"flair", "t2f", "t2flair"}
_T1CE = {"t1ce", "t1c", "t1gd", "t1post", "t1wce", "t1gad", "t1contrast"}
_CONTRAST = {"ce", "c", "gd", "gad", "post", "contrast", "postcontrast", "enhanced"}
_T1 = {"t1", "t1n", "t1w", "t1pre", "t1native"}
_T2 = {"t2", "t2w"}


def role_of(name: str) -> Optional[str]:
    """The sequence a volume name suggests (BraTS 2021 ``_t1ce``, 2023 ``-t1c``, common scanner
    names), or None when the name says nothing or names two sequences."""
    low = name.lower()
    for ext in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if low.endswith(ext):
            low = low[: -len(ext)]
    tokens = set(re.split(r"[^a-z0-9]+", low)) - {""}
    joined = re.sub(r"[^a-z0-9]+", "", low)
    found = set()
    if tokens & _FLAIR or "flair" in joined:
        found.add("flair")
    if tokens & _T1CE or (tokens & _T1 and tokens & _CONTRAST):
        found.add("t1ce")
    elif tokens & _T1:
        found.add("t1")
    if tokens & _T2 and "flair" not in found:
        found.add("t2")
    return found.pop() if len(found) == 1 else None


def assign(names: Sequence[str]) -> Tuple[Dict[str, Optional[int]], List[str]]:
    """Index of the volume for each role (None if no name or several names fit), and notes on
    what was left for the user to choose."""
    by_role: Dict[str, List[int]] = {r: [] for r in ROLES}
    for i, n in enumerate(names):
        r = role_of(n)
        if r:
            by_role[r].append(i)
    out: Dict[str, Optional[int]] = {}
    notes = []
    for r in ROLES:
        hits = by_role[r]
        out[r] = hits[0] if len(hits) == 1 else None
        if len(hits) > 1:
            notes.append(f"{ROLE_TITLES[r]}: several volumes fit ({', '.join(names[i] for i in hits)}); choose one")
        elif not hits:
            leave = " or leave it empty" if r in OPTIONAL_ROLES else ""
            notes.append(f"{ROLE_TITLES[r]}: no volume name fits; choose one{leave}")
    return out, notes


def segment_blocker(chosen: Dict[str, Optional[str]]) -> str:
    """Why Segment cannot run yet for the chosen volumes ({role: node ID or None}), or "" when it
    can: the T1ce and the FLAIR need a volume (T1 and T2 may be left out), and no volume may be
    chosen for two sequences (the button's tooltip says this)."""
    missing = [ROLE_TITLES[r] for r in REQUIRED_ROLES if not chosen.get(r)]
    if missing:
        return f"Choose a volume for {', '.join(missing)}."
    seen: Dict[str, str] = {}
    for r in ROLES:
        if not chosen.get(r):
            continue
        ident = str(chosen[r])
        if ident in seen:
            return f"{ROLE_TITLES[seen[ident]]} and {ROLE_TITLES[r]} are the same volume; choose a different one for each."
        seen[ident] = r
    return ""


def left_out(chosen: Dict[str, Optional[object]]) -> List[str]:
    """The titles of the optional sequences without a volume (their channel is left empty)."""
    return [ROLE_TITLES[r] for r in OPTIONAL_ROLES if not chosen.get(r)]
