"""Finding the files of a case by role (t1, t1ce, t2, flair, seg), never by position.

Recognised names, with ``<id>`` the case id:

| role  | BraTS 2021       | BraTS 2023+     | also accepted         |
|-------|------------------|-----------------|-----------------------|
| t1    | ``<id>_t1``      | ``<id>-t1n``    |                       |
| t1ce  | ``<id>_t1ce``    | ``<id>-t1c``    | ``t1gd``              |
| t2    | ``<id>_t2``      | ``<id>-t2w``    |                       |
| flair | ``<id>_flair``   | ``<id>-t2f``    |                       |
| seg   | ``<id>_seg``     | ``<id>-seg``    |                       |

Either separator (``_`` or ``-``) is accepted with every suffix; any of the supported image
extensions may follow. A file named by its role alone (``t1ce.nii.gz``, ``FLAIR.nrrd``,
``seg.nii.gz``: any suffix above, any case) belongs to the case named after its folder, as many
tools and exports name them.

A sequence may also be a DICOM series: a subfolder of the case folder named by its role alone
(``t1``, ``t1ce``, ``t2``, ``flair``, or a BraTS 2023 or other accepted suffix such as ``t1c``)
holding the series' files; the case id is then the case folder's name, and the case's expert
labels, if any, are ``<case folder name>_seg.nii.gz`` (or another image extension) beside them.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import InputError, PathLike
from .formats import image_extension, strip_extension

SEQUENCES = ("t1", "t1ce", "t2", "flair")
# Sequences a case may lack (clinics often skip one): their channel is left empty, as in training's
# sequence dropout. The T1ce (the reference grid) and the FLAIR (the edema) are always needed.
OPTIONAL_SEQUENCES = ("t1", "t2")
REQUIRED_SEQUENCES = tuple(r for r in SEQUENCES if r not in OPTIONAL_SEQUENCES)
REFERENCE = "t1ce"  # the sequence whose grid everything is registered to and the labels come out on
ROLES = SEQUENCES + ("seg",)
ALL_FOUR = "all four"  # the name a held-out table gives its cases segmented with every sequence


def without_condition(role: str) -> str:
    """The name a held-out table gives its cases segmented with ``role`` left out (``no T1``)."""
    return f"no {role.upper()}"


_SUFFIXES = {
    "t1": "t1", "t1n": "t1",
    "t1ce": "t1ce", "t1c": "t1ce", "t1gd": "t1ce",
    "t2": "t2", "t2w": "t2",
    "flair": "flair", "t2f": "flair",
    "seg": "seg",
}
_LAYOUT = {"t1n": "brats2023", "t1c": "brats2023", "t2w": "brats2023", "t2f": "brats2023"}
_PATTERN = re.compile(r"^(?P<id>.+?)[_-](?P<suffix>%s)$" % "|".join(
    sorted(_SUFFIXES, key=len, reverse=True)), re.IGNORECASE)


def parse_name(filename: str) -> Optional[Tuple[str, str, str]]:
    """(case id, role, suffix) of a file name, or None if it names no role."""
    base = os.path.basename(filename)
    if image_extension(base) is None:
        return None
    m = _PATTERN.match(strip_extension(base))
    if not m:
        return None
    suffix = m.group("suffix").lower()
    return m.group("id"), _SUFFIXES[suffix], suffix


def _role_alone(filename: str) -> Optional[Tuple[str, str]]:
    """(role, suffix) of an image file named by its role alone (``t1ce.nii.gz``), else None."""
    base = os.path.basename(filename)
    if image_extension(base) is None:
        return None
    suffix = strip_extension(base).lower()
    return (_SUFFIXES[suffix], suffix) if suffix in _SUFFIXES else None


def _folder_case_id(folder: str) -> str:
    """The case id of sequences named by role alone: their folder's name."""
    return os.path.basename(os.path.normpath(os.path.abspath(folder)))


@dataclass
class Case:
    """The files of one case, by role; ``seg`` is optional."""

    case_id: str
    paths: Dict[str, str] = field(default_factory=dict)
    layout: str = "brats2021"
    folder: Optional[str] = None
    problem: Optional[InputError] = None  # found among its files (a batch goes on), raised by require

    @classmethod
    def from_paths(cls, case_id: str = "case", **paths: Optional[PathLike]) -> "Case":
        """A case from explicit paths per role, e.g. ``Case.from_paths(t1=..., t1ce=..., ...)``."""
        unknown = set(paths) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown roles {sorted(unknown)}; known: {ROLES}")
        return cls(case_id, {r: os.fspath(p) for r, p in paths.items() if p is not None})

    def missing(self, roles=SEQUENCES) -> List[str]:
        return [r for r in roles if r not in self.paths]

    def require(self, roles=SEQUENCES) -> "Case":
        """Raise the problem found among its files, or one naming the case folder and the missing
        roles, if any."""
        if self.problem is not None:
            raise self.problem
        miss = self.missing(roles)
        if miss:
            where = self.folder or self.case_id
            raise InputError(where, f"case {self.case_id} has no {', '.join(miss)} file")
        return self

    @property
    def sequences(self) -> Dict[str, str]:
        return {r: self.paths[r] for r in SEQUENCES if r in self.paths}


def sequences_needed(roles: Sequence[str]) -> str:
    """A model's sequences in words, with those a case may lack: ``t1, t1ce, t2, flair (t1 and t2
    may be left out)``."""
    optional = [r for r in roles if r in OPTIONAL_SEQUENCES]
    return ", ".join(roles) + (f" ({' and '.join(optional)} may be left out)" if optional else "")


def find_case(folder: PathLike) -> Case:
    """The single case held in ``folder`` (files named by role, see module docstring)."""
    cases = _cases_in(os.fspath(folder))
    if not cases:
        raise InputError(folder, "holds no case files named by role (e.g. <id>_t1ce.nii.gz, <id>-t1c.nii.gz "
                                 "or t1ce.nii.gz)")
    if len(cases) > 1:
        raise InputError(folder, f"holds files of several cases ({', '.join(sorted(cases))}); "
                                 "give one case folder")
    return next(iter(cases.values()))


def find_cases(root: PathLike, keep_going: bool = False) -> List[Case]:
    """All cases below ``root``: one per subfolder (BraTS layout) and any directly in ``root``.
    ``keep_going``: a case with two files for one role is kept, its problem recorded for
    :meth:`Case.require` to raise (a batch records it as a failed case), rather than raised here."""
    r = os.fspath(root)
    if not os.path.isdir(r):
        raise InputError(r, "folder not found")
    found: Dict[str, Case] = dict(_cases_in(r, keep_going))
    for name in sorted(os.listdir(r)):
        sub = os.path.join(r, name)
        if os.path.isdir(sub) and not name.startswith("."):
            for cid, case in _cases_in(sub, keep_going).items():
                if cid in found:
                    raise InputError(sub, f"case id {cid} appears in more than one place "
                                          f"(also in {found[cid].folder})")
                found[cid] = case
    return [found[k] for k in sorted(found)]


def _cases_in(folder: str, keep_going: bool = False) -> Dict[str, Case]:
    if not os.path.isdir(folder):
        raise InputError(folder, "folder not found")
    cases: Dict[str, Case] = {}
    for name in sorted(os.listdir(folder)):
        if name.startswith(".") or os.path.isdir(os.path.join(folder, name)):
            continue
        parsed = parse_name(name)
        alone = None if parsed else _role_alone(name)
        if alone:
            parsed = (_folder_case_id(folder),) + alone
        if parsed is None:
            continue
        cid, role, suffix = parsed
        case = cases.setdefault(cid, Case(cid, folder=folder))
        path = os.path.join(folder, name)
        if role in case.paths:
            _second(case, role, path, keep_going)
            continue
        case.paths[role] = path
        if suffix in _LAYOUT:
            case.layout = _LAYOUT[suffix]
    _add_series_folders(folder, cases, keep_going)
    return cases


def _second(case: Case, role: str, path: str, keep_going: bool) -> None:
    """A second file or series folder for one role: raised, or recorded in ``case`` (``keep_going``)."""
    problem = InputError(path, f"second {role} for case {case.case_id} (first: {os.path.basename(case.paths[role])}); "
                               "keep one")
    if not keep_going:
        raise problem
    case.problem = case.problem or problem


def _add_series_folders(folder: str, cases: Dict[str, Case], keep_going: bool = False) -> None:
    """Sequences given as DICOM series: subfolders named by role (see module docstring)."""
    subfolders = [n for n in sorted(os.listdir(folder))
                  if _SUFFIXES.get(n.lower(), "seg") != "seg" and os.path.isdir(os.path.join(folder, n))]
    if not subfolders:
        return
    cid = _folder_case_id(folder)
    case = cases.setdefault(cid, Case(cid, folder=folder))
    for name in subfolders:
        role, path = _SUFFIXES[name.lower()], os.path.join(folder, name)
        if role in case.paths:
            _second(case, role, path, keep_going)
            continue
        case.paths[role] = path
        if name.lower() in _LAYOUT:
            case.layout = _LAYOUT[name.lower()]


def case_file_name(case_id: str, role: str, layout: str = "brats2021", ext: str = ".nii.gz") -> str:
    """File name of ``role`` for ``case_id`` in a BraTS layout."""
    if layout == "brats2021":
        return f"{case_id}_{role}{ext}"
    names = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f", "seg": "seg"}
    return f"{case_id}-{names[role]}{ext}"
