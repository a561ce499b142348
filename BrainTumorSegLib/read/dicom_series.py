"""Reading one DICOM image series from a folder as a volume, checked slice by slice.

A sequence may be given as a folder holding the files of one DICOM series (one file per slice).
The series is read with SimpleITK's ImageSeriesReader, its slices sorted by their position along
the slice normal, the geometry taken from the files (Image Position and Orientation (Patient),
Pixel Spacing). Nothing relies on patient fields, so de-identified series read the same. Before
any pixel is read, the slices are checked: greyscale, one orientation and one pixel spacing (both
valid), one frame of reference, no two at one position, evenly spaced (a missing slice or uneven
spacing is an error: a volume with a hole would be silently stretched), stacked straight, one
matrix size, each file
holding all its pixel data (a file cut short would be read with part of its slice zero). A folder
holding several series needs the series chosen by its Series Instance UID (``--series-uid``),
else the error lists them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from ..errors import InputError, PathLike
from .images import check_grid, checked_volume, dims

_POSITION, _ORIENTATION, _PIXEL_SPACING, _BITS = "0020|0032", "0020|0037", "0028|0030", "0028|0100"
_DESCRIPTION, _SOP_UID, _PATIENT_ID, _FRAME = "0008|103e", "0008|0018", "0010|0020", "0020|0052"
_PIXEL_DATA = b"\xe0\x7f\x10\x00"  # the Pixel Data tag (7FE0,0010), little endian
_TRANSFER_SYNTAX = b"\x02\x00\x10\x00UI"  # (0002,0010) in the file meta group, always explicit little endian
_IMPLICIT, _EXPLICIT = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"  # the uncompressed little-endian syntaxes
_LISTED = 5  # series listed by name in an error; the rest counted


@dataclass
class Series:
    """One series read from ``folder``: its volume, and its files in the order of the volume's slices."""

    folder: str
    uid: str
    description: str
    files: List[str]
    image: sitk.Image   # float32, on the series' own grid
    patient: str = ""   # its Patient ID, where recorded: compared between sequences, never written out


def is_series_folder(path: Optional[PathLike]) -> bool:
    """Whether an input path names a folder (a DICOM series) rather than a volume file."""
    return path is not None and os.path.isdir(os.fspath(path))


def series_in(folder: PathLike) -> Dict[str, List[str]]:
    """Series Instance UID -> files, of every DICOM series directly in ``folder``."""
    f = os.fspath(folder)
    if not os.path.isdir(f):
        raise InputError(f, "folder not found")
    found: Dict[str, List[str]] = {}
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM's "No Series were found" is ours to say, in one line
    try:
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(f)
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    for uid in uids:
        found[uid] = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(f, uid))
    return found


def _info(path: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.LoadPrivateTagsOff()
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError(path, "cannot be read as a DICOM image") from None
    return reader


def _tag(reader: sitk.ImageFileReader, key: str) -> str:
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def _describe(uid: str, files: List[str]) -> str:
    description = _tag(_info(files[0]), _DESCRIPTION) or "(no description)"
    return f"'{description}' UID {uid} ({len(files)} files)"


def choose(folder: str, found: Mapping[str, List[str]], wanted: Sequence[str] = (), strict: bool = False) -> str:
    """The UID of the series to read from ``folder``: the one of ``wanted`` it holds, else its only
    series unless ``strict`` (UIDs asked for this folder alone, one of which must be here)."""
    if not found:
        raise InputError(folder, "holds no DICOM series (no readable DICOM image files directly in it)")
    picked = [u for u in found if u in wanted]
    if len(picked) == 1:
        return picked[0]
    if len(found) == 1 and not picked and not strict:
        return next(iter(found))
    shown = [_describe(u, files) for u, files in list(found.items())[:_LISTED]]
    listing = "; ".join(shown) + (f"; and {len(found) - _LISTED} more" if len(found) > _LISTED else "")
    if picked:
        raise InputError(folder, f"holds {len(picked)} of the series asked for with --series-uid: {listing}")
    if wanted:
        raise InputError(folder, f"holds none of the series asked for with --series-uid ({', '.join(wanted)}); "
                                 f"it holds: {listing}")
    raise InputError(folder, f"holds {len(found)} DICOM series; choose one with --series-uid UID (or ROLE=UID): {listing}")


def _vector(reader: sitk.ImageFileReader, key: str, n: int, path: str, what: str,
            unknown: str = "the slices cannot be placed in space") -> np.ndarray:
    try:
        values = np.array([float(v) for v in _tag(reader, key).split("\\")])
    except ValueError:
        values = np.array([])
    if values.shape != (n,) or not np.isfinite(values).all():
        raise InputError(path, f"has no valid {what}; {unknown}")
    return values


def _orientation(reader: sitk.ImageFileReader, path: str) -> np.ndarray:
    cosines = _vector(reader, _ORIENTATION, 6, path, "Image Orientation (Patient)")
    row, col = cosines[:3], cosines[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise InputError(path, "has an invalid Image Orientation (Patient): its row and column directions are not "
                               "two perpendicular unit vectors")
    return cosines


def _pixel_spacing(reader: sitk.ImageFileReader, path: str) -> np.ndarray:
    spacing = _vector(reader, _PIXEL_SPACING, 2, path, "Pixel Spacing", "the size of its voxels is unknown")
    if (spacing <= 0).any():
        raise InputError(path, f"has an invalid Pixel Spacing ({spacing[0]:g} x {spacing[1]:g} mm); the size of "
                               "its voxels is unknown")
    return spacing


def _transfer_syntax(data: bytes) -> str:
    """A DICOM file's Transfer Syntax UID from its meta group ("" when it has none)."""
    if data[128:132] != b"DICM":
        return ""
    at = data.find(_TRANSFER_SYNTAX, 132, 132 + 4096)
    if at < 0:
        return ""
    n = int.from_bytes(data[at + 6:at + 8], "little")
    return data[at + 8:at + 8 + n].rstrip(b"\0 ").decode("ascii", "replace")


def _check_pixels(reader: sitk.ImageFileReader, path: str) -> None:
    """A greyscale slice whose file holds all its pixel data. GDCM reads a file cut short, or a Pixel
    Data element shorter than the slice, with the rest of the slice zero and no word said. Checked
    for uncompressed little-endian files, which is what scanners and PACS exports mostly write; the
    codec of a compressed one says itself whether its frame is whole."""
    if reader.GetNumberOfComponents() != 1:
        raise InputError(path, f"is a colour image ({reader.GetNumberOfComponents()} samples per pixel: a "
                               "screenshot or secondary capture?); an MR series is greyscale")
    try:
        bits = int(_tag(reader, _BITS))
    except ValueError:
        return  # GDCM read the header without it; its own pixel read decides
    if bits % 8:
        return  # packed (the retired 12 bits allocated): not whole bytes per pixel
    with open(path, "rb") as f:
        data = f.read()
    syntax = _transfer_syntax(data)
    if syntax not in (_IMPLICIT, _EXPLICIT):
        return
    width, height = reader.GetSize()[:2]
    needed = width * height * bits // 8
    # the tag's bytes may also occur before the slice's own Pixel Data (an icon image's, a private
    # element's value): the slice is whole when any occurrence holds enough bytes
    header = 12 if syntax == _EXPLICIT else 8  # tag, then VR, two reserved bytes and length; or tag and length
    held, at = 0, data.find(_PIXEL_DATA)
    while at >= 0:
        start = at + header
        held = max(held, min(int.from_bytes(data[start - 4:start], "little"), len(data) - start))
        at = data.find(_PIXEL_DATA, at + 1)
    if held < needed:
        raise InputError(path, f"holds {held} bytes of pixel data where its {width} x {height} slice needs "
                               f"{needed}: the file is damaged or cut short")


def _unread(folder: str, files: Sequence[str]) -> List[str]:
    """Files directly in ``folder`` that are in no series listed there (damaged or not DICOM)."""
    listed = {os.path.realpath(p) for p in files}
    return sorted(n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n))
                  and os.path.realpath(os.path.join(folder, n)) not in listed)


def slice_positions(folder: str, files: Sequence[str], others: Sequence[str] = ()) -> Tuple[List[str], float]:
    """``files`` sorted along the slice normal and their spacing (mm), after checking the stack, each
    slice's header and the volume's grid; ``others``: the folder's files in no series, named if a
    slice is missing."""
    if len(files) < 2:
        raise InputError(folder, f"holds a series of {len(files)} file; one file per slice of a 3D volume is "
                                 "expected (multi-frame files are not read)")
    readers = [_info(p) for p in files]
    cosines = [_orientation(r, p) for r, p in zip(readers, files)]
    for c, p in zip(cosines, files):
        if np.abs(c - cosines[0]).max() > 1e-4:
            raise InputError(folder, f"mixes slice orientations ({os.path.basename(files[0])} and "
                                     f"{os.path.basename(p)} differ); one series of parallel slices is expected")
    pixel_spacings = [_pixel_spacing(r, p) for r, p in zip(readers, files)]
    for s, p in zip(pixel_spacings, files):
        if np.abs(s - pixel_spacings[0]).max() > 1e-4 * max(1.0, float(pixel_spacings[0].max())):
            raise InputError(folder, f"mixes pixel spacings ({os.path.basename(files[0])}: "
                                     f"{pixel_spacings[0][0]:g} x {pixel_spacings[0][1]:g} mm, {os.path.basename(p)}: "
                                     f"{s[0]:g} x {s[1]:g} mm); one series of one resolution is expected")
    for r, p in zip(readers, files):
        if not _tag(r, _SOP_UID):
            raise InputError(p, "has no SOP Instance UID (0008,0018); it is not a valid DICOM image")
    frames = [_tag(r, _FRAME) for r in readers]
    for f, p in zip(frames, files):
        if f != frames[0]:  # positions in two frames of reference are not comparable
            raise InputError(folder, f"mixes frames of reference ({os.path.basename(files[0])} and "
                                     f"{os.path.basename(p)} differ in Frame of Reference UID); one series in one "
                                     "patient coordinate system is expected")
    for r, p in zip(readers, files):
        if r.GetSize()[:2] != readers[0].GetSize()[:2] or (len(r.GetSize()) > 2 and r.GetSize()[2] > 1):
            raise InputError(folder, f"mixes image sizes or holds multi-frame files ({os.path.basename(p)}: "
                                     f"{dims(r.GetSize())}); one slice per file, one matrix is expected")
    row, col = cosines[0][:3], cosines[0][3:]
    normal = np.cross(row, col)
    points = np.array([_vector(r, _POSITION, 3, p, "Image Position (Patient)") for r, p in zip(readers, files)])
    order = np.argsort(points @ normal, kind="stable")
    points = points[order]
    depth = points @ normal
    steps = np.diff(depth)
    where = [f"{d:.2f}" for d in depth]
    if (steps < 1e-3).any():
        k = int(np.argmax(steps < 1e-3))
        raise InputError(folder, f"has two slices at one position ({where[k]} mm along the slice normal); "
                                 "one series of one echo and time point is expected")
    spacing = float(np.median(steps))
    tol = max(0.01, 0.01 * spacing)
    _check_spacing(folder, steps, spacing, tol, where, others)
    in_plane = np.abs((points - points[0]) @ np.stack([row, col]).T).max()
    if in_plane > max(0.05, tol):
        raise InputError(folder, f"slices are not stacked straight (shifted by up to {in_plane:.2f} mm in their "
                                 "plane: gantry tilt?); a straight stack of slices is expected")
    for r, p in zip(readers, files):
        _check_pixels(r, p)
    rows, columns = pixel_spacings[0]  # DICOM: between rows, then between columns
    check_grid((*readers[0].GetSize()[:2], len(files)), (columns, rows, spacing), folder)
    return [files[i] for i in order], spacing


def _check_spacing(folder: str, steps: np.ndarray, spacing: float, tol: float, where: List[str],
                   others: Sequence[str]) -> None:
    bad = np.flatnonzero(np.abs(steps - spacing) > tol)
    if not bad.size:
        return
    k = int(bad[0])
    gaps = steps[bad] / spacing
    if np.allclose(gaps, np.round(gaps), atol=0.02) and (gaps > 1.5).all():
        missing = int(np.round(gaps - 1).sum())
        unread = (f" ({', '.join(others[:3])}{' ...' if len(others) > 3 else ''} in the folder cannot be read as "
                  "DICOM: damaged?)") if others else ""
        raise InputError(folder, f"has {missing} missing slice(s): a gap of {steps[k]:.2f} mm between the slices "
                                 f"at {where[k]} and {where[k + 1]} mm where the spacing is {spacing:.2f} mm{unread}")
    raise InputError(folder, f"has uneven slice spacing ({steps.min():.2f} to {steps.max():.2f} mm, first "
                             f"irregular step after {where[k]} mm); evenly spaced slices are expected")


def check_series(folder: PathLike, wanted: Sequence[str] = (), strict: bool = False) -> Tuple[str, List[str], float]:
    """The series of ``folder`` (see :func:`choose`) checked from its files' headers alone, before
    any pixel is read (quick: ``segment`` runs it before loading a model): its UID, its files in
    slice order and its slice spacing. Every problem is an :class:`InputError` naming the folder."""
    f = os.fspath(folder)
    found = series_in(f)
    uid = choose(f, found, wanted, strict)
    files, spacing = slice_positions(f, found[uid], _unread(f, [p for fs in found.values() for p in fs]))
    return uid, files, spacing


def read_series(folder: PathLike, wanted: Sequence[str] = (), strict: bool = False) -> Series:
    """The series of ``folder`` (see :func:`choose`) as a float32 volume, after checking its
    slices (:func:`check_series`). Every problem is an :class:`InputError` naming the folder."""
    f = os.fspath(folder)
    uid, files, spacing = check_series(f, wanted, strict)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        img = reader.Execute()
    except RuntimeError:
        raise InputError(f, f"the pixel data of series {uid} cannot be read") from None
    img.SetSpacing(img.GetSpacing()[:2] + (spacing,))  # the checked spacing, not the reader's estimate
    img = checked_volume(img, f)  # after it: the field of view is judged with that spacing
    first = _info(files[0])
    return Series(f, uid, _tag(first, _DESCRIPTION), files, img, _tag(first, _PATIENT_ID))


def parse_series_uids(values: Optional[Sequence[str]], roles: Sequence[str]) -> Dict[str, Tuple[List[str], bool]]:
    """``--series-uid`` values per role: (UIDs, strict). ``UID`` applies to every folder (one that
    holds a single other series still reads it); ``ROLE=UID`` to that role's folder alone (strict)."""
    anywhere: List[str] = []
    own: Dict[str, List[str]] = {r: [] for r in roles}
    for v in values or ():
        role, sep, uid = v.partition("=")
        if not sep:
            anywhere.append(v.strip())
        elif role.strip() in own:
            own[role.strip()].append(uid.strip())
        else:
            raise InputError("--series-uid", f"{v!r}: the role before '=' must be one of {', '.join(roles)}")
    return {r: (own[r], True) if own[r] else (anywhere, False) for r in roles}


def read_inputs(inputs: Mapping[str, Optional[str]], series_uids: Optional[Sequence[str]] = None) -> Dict[str, Series]:
    """The inputs given as folders, each read as its DICOM series (role -> :class:`Series`)."""
    wanted = parse_series_uids(series_uids, list(inputs))
    return {role: read_series(path, *wanted[role]) for role, path in inputs.items()
            if path is not None and is_series_folder(path)}


def patient_mismatch(series: Mapping[str, Series]) -> Optional[str]:
    """A warning when the sequences' DICOM series record different Patient IDs (the IDs are not
    repeated: the warning goes into reports); None when they agree or are not recorded."""
    recorded = {role: s.patient for role, s in series.items() if s.patient}
    if len(set(recorded.values())) < 2:
        return None
    return (f"the DICOM series of {', '.join(recorded)} record different Patient IDs: check that the sequences "
            "belong to one patient")


def sop_instance_uids(files: Sequence[str]) -> List[str]:
    """The SOP Instance UID of each file."""
    return [_tag(_info(p), _SOP_UID) for p in files]
