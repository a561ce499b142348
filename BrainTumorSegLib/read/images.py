"""Reading volumes through SimpleITK, keeping geometry, and comparing grids.

Formats: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) and MetaImage (.mha, .mhd); a folder of DICOM
files is read as one series (``dicom_series``). A file that cannot be read is one line naming it.
"""
from __future__ import annotations

import gzip
import os
import re
import struct
import zlib
from typing import Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from ..errors import InputError, PathLike
from .formats import EXTENSIONS, image_extension, read_header


def read_image(path: PathLike, kind: str = "image") -> sitk.Image:
    """Read a 3D scalar volume and check it.

    ``kind='image'`` returns float32 and rejects all-zero volumes; ``kind='label'`` returns
    the stored integer type and rejects non-integer values. Both reject NaN/Inf, 2D, 4D and
    multi-component images with an :class:`InputError` naming the file.
    """
    p = os.fspath(path)
    if os.path.isdir(p) and kind == "image":  # a folder is one DICOM series
        from .dicom_series import read_series

        return read_series(p).image
    reader = check_image_file(p, "a label volume file" if kind == "label" else "a volume file")
    if image_extension(p) in (".nii", ".nii.gz"):
        _check_nifti_payload(p)
    elif image_extension(p) in (".mha", ".mhd"):
        _check_metaimage_payload(p, reader.GetSize())
    elif image_extension(p) in (".nrrd", ".nhdr"):
        _check_nrrd_gzip(p)
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise InputError(p, f"cannot be read as an image ({short_itk_message(exc)})") from None
    if kind == "image":
        return checked_volume(img, p)
    arr = sitk.GetArrayViewFromImage(img)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError(p, "contains NaN or Inf values")
    if kind == "label":
        if arr.dtype.kind == "f":
            if not np.array_equal(arr, np.round(arr)):
                raise InputError(p, "holds non-integer values; a label map is expected")
            img = sitk.Cast(img, sitk.sitkInt32)
        return img
    raise ValueError(f"unknown kind {kind!r}")


MIN_VOXELS = 4  # along every axis: ITK's smoothing before registration needs as many
MIN_EXTENT_MM = 4.0  # along every axis: a thinner field of view is a spacing written wrongly
MAX_EXTENT_MM = 400.0  # a head scan's field of view is shorter along every axis


def checked_volume(img: sitk.Image, name: str) -> sitk.Image:
    """``img`` as float32, once its values are found finite and not all one value, and its field of
    view no longer than a head's (errors name ``name``)."""
    _check_geometry(img.GetSpacing(), img.GetDirection(), img.GetOrigin(), name)
    check_grid(img.GetSize(), img.GetSpacing(), name)
    arr = sitk.GetArrayViewFromImage(img)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError(name, "contains NaN or Inf values")
    low, high = arr.min(), arr.max()
    if low == high:
        raise InputError(name, "is all zero" if high == 0 else f"has the same value ({high:g}) in every voxel")
    return sitk.Cast(img, sitk.sitkFloat32)


def dims(values: Sequence[float], sep: str = "x") -> str:
    """Sizes, spacings or coordinates as a message writes them: ``240x240x155``, ``1x1x2.5``."""
    return sep.join(f"{round(float(v), 3):g}" for v in values)


def check_grid(size: Sequence[int], spacing: Sequence[float], name: str) -> None:
    """A 3D volume's grid (from a header is enough): at least ``MIN_VOXELS`` voxels and
    ``MIN_EXTENT_MM`` along each axis, and no longer than a head scan (``MAX_EXTENT_MM``) along any."""
    extent = [n * s for n, s in zip(size, spacing)]
    if min(size) < MIN_VOXELS or min(extent) < MIN_EXTENT_MM:
        raise InputError(name, f"spans only {dims(extent)} mm ({dims(size)} voxels of {dims(spacing)} mm); at least "
                               f"{MIN_VOXELS} voxels and {MIN_EXTENT_MM:g} mm along every axis are needed: check the "
                               "file and its voxel spacing")
    if max(extent) > MAX_EXTENT_MM:
        # e.g. a slice thickness written wrongly: its working grid would not fit in memory
        raise InputError(name, f"spans {max(extent):.0f} mm ({dims(size)} voxels of {dims(spacing)} mm), more than "
                               f"a head scan's {MAX_EXTENT_MM:.0f} mm: check the voxel spacing in its header")


def check_image_file(path: PathLike, expected: str = "a volume file") -> sitk.ImageFileReader:
    """Check, from its header only (quick: before anything slow), that ``path`` is a readable 3D
    scalar volume of a supported type; returns the reader, ready to read the voxels."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise InputError(p, "file not found")
    if os.path.isdir(p):
        raise InputError(p, f"is a folder, {expected} is expected")
    if image_extension(p) is None:
        raise InputError(p, f"unsupported file type; expected one of {', '.join(EXTENSIONS)}")
    if not os.access(p, os.R_OK):
        raise InputError(p, "cannot be read: permission denied")
    if image_extension(p) in (".mha", ".mhd"):
        _check_metaimage_numbers(p)
    reader = sitk.ImageFileReader()
    reader.SetFileName(p)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        if _is_nifti2(p):
            raise InputError(p, "is a NIfTI-2 file, which ITK does not read; save it as NIfTI-1 (.nii.gz)") from None
        raise InputError(p, f"cannot be read as an image ({short_itk_message(exc)})") from None
    dim, size, ncomp = reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents()
    if dim != 3:
        raise InputError(p, f"is a {dim}D image of size {dims(size)}; a 3D volume is expected")
    if ncomp != 1:
        raise InputError(p, f"has {ncomp} components per voxel; a scalar 3D volume is expected")
    _check_geometry(reader.GetSpacing(), reader.GetDirection(), reader.GetOrigin(), p)
    check_grid(size, reader.GetSpacing(), p)
    return reader


def _check_geometry(spacing: Sequence[float], direction: Sequence[float], origin: Sequence[float], name: str) -> None:
    """Positive spacings, a finite origin and orthonormal axes (NIfTI's reader enforces them;
    MetaImage's and NRRD's pass a negative spacing, NaN or a sheared matrix on, and the result would
    be silently wrong, or another sequence blamed for not overlapping it)."""
    if not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise InputError(name, f"has voxel spacing {dims(spacing)} mm in its header; every spacing must be positive")
    if not all(np.isfinite(origin)):
        raise InputError(name, f"has no valid origin in its header ({dims(origin, ', ')}); the volume cannot be placed "
                               "in space")
    d = np.asarray(direction, float).reshape(3, 3)
    if not np.isfinite(d).all() or not np.allclose(d.T @ d, np.eye(3), atol=1e-4):
        raise InputError(name, "has a direction matrix that is not orthonormal (sheared or scaled axes) in its "
                               "header; resample it onto an orthogonal grid first")


# NIfTI datatype codes: bytes per voxel, and the floating-point ones as numpy types
_NIFTI_BYTES = {2: 1, 4: 2, 8: 4, 16: 4, 32: 8, 64: 8, 128: 3, 256: 1, 512: 2, 768: 4, 1024: 8, 1280: 8,
                1536: 16, 1792: 16, 2048: 32, 2304: 4}
_NIFTI_FLOATS = {16: "f4", 64: "f8"}


def _nifti_layout(data: bytes) -> Tuple[str, int, int, int]:
    """Byte order, datatype code, voxel count and data offset from a NIfTI-1 header (the NIfTI
    that ITK reads; it refuses NIfTI-2 before this is asked)."""
    if len(data) < 348:
        raise ValueError("the header ends early")
    order = next((o for o in "<>" if struct.unpack_from(o + "i", data)[0] == 348), None)
    if order is None:
        raise ValueError("no NIfTI-1 header")
    dims = struct.unpack_from(order + "8h", data, 40)
    code = struct.unpack_from(order + "h", data, 70)[0]
    vox_offset = struct.unpack_from(order + "f", data, 108)[0]
    if not 0 <= vox_offset < float("inf"):  # NaN too
        raise ValueError(f"invalid data offset {vox_offset}")
    offset = int(vox_offset)
    ndim = dims[0]
    if not 1 <= ndim <= 7 or min(dims[1:1 + ndim]) < 1:
        raise ValueError(f"invalid dimensions {list(dims)}")
    if code not in _NIFTI_BYTES:
        raise ValueError(f"unknown datatype {code}")
    return order, code, int(np.prod(dims[1:1 + ndim], dtype=np.int64)), max(offset, 352)


def _is_nifti2(path: str) -> bool:
    """Whether a .nii or .nii.gz file starts with a NIfTI-2 header (sizeof_hdr 540)."""
    if image_extension(path) not in (".nii", ".nii.gz"):
        return False
    try:
        with (gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")) as f:
            head = f.read(4)
    except (OSError, EOFError, zlib.error):
        return False
    return len(head) == 4 and 540 in (struct.unpack("<i", head)[0], struct.unpack(">i", head)[0])


def _check_nifti_payload(path: str) -> None:
    """ITK's NIfTI reader fills a truncated file with garbage and turns NaN/Inf into 0 without a
    word: read the voxel data once (decompressed where gzipped) to check that it is whole and finite
    (an uncompressed file of integers: its size is enough)."""
    gzipped = path.lower().endswith(".gz")
    try:
        with open(path, "rb") as f:
            data = f.read() if gzipped else f.read(348)
            if gzipped:
                data = gzip.decompress(data)
            order, code, count, offset = _nifti_layout(data)
            if not gzipped and code in _NIFTI_FLOATS:
                data += f.read()
        size = len(data) if gzipped else os.path.getsize(path)
    except (EOFError, OSError, zlib.error):
        raise InputError(path, "is truncated or corrupt (the voxel data end early)") from None
    except ValueError as exc:
        raise InputError(path, f"cannot be read as NIfTI ({exc})") from None
    needed = offset + count * _NIFTI_BYTES[code]
    if size < needed:
        if gzipped:
            raise InputError(path, "is truncated or corrupt (the voxel data end early)")
        raise InputError(path, f"is truncated: {size} bytes of the {needed} its header announces")
    if code in _NIFTI_FLOATS and not np.isfinite(np.frombuffer(data, order + _NIFTI_FLOATS[code], count, offset)).all():
        raise InputError(path, "contains NaN or Inf values")


_MET_BYTES = {"MET_UCHAR": 1, "MET_CHAR": 1, "MET_USHORT": 2, "MET_SHORT": 2, "MET_UINT": 4, "MET_INT": 4,
              "MET_FLOAT": 4, "MET_DOUBLE": 8, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8}


def _check_nrrd_gzip(path: str) -> None:
    """ITK's NRRD reader takes gzip-encoded voxel data whose checksum fails (damaged in the middle)
    as they come: read them once through zlib, which checks it. Layouts this does not know (a
    numbered or listed data file, skipped lines or bytes) are left to ITK."""
    fields, offset, _ = read_header(path)
    if fields.get("encoding") not in ("gzip", "gz") or fields.get("line skip", "0") != "0" or \
            fields.get("byte skip", "0") != "0":
        return
    named = fields.get("data file")
    if named is not None and ("%" in named or named.upper().startswith("LIST")):
        return
    source = path if named is None else os.path.join(os.path.dirname(os.path.abspath(path)), named)
    unpack = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip, its checksum checked; bytes after it ignored, as ITK does
    whole = True
    try:
        with open(source, "rb") as f:
            f.seek(0 if named is not None else offset)
            while not unpack.eof and (chunk := f.read(1 << 22)):
                unpack.decompress(chunk, 1 << 26)
                while unpack.unconsumed_tail and not unpack.eof:
                    unpack.decompress(unpack.unconsumed_tail, 1 << 26)
    except OSError:
        return  # a missing or unreadable data file is ITK's to report
    except zlib.error:
        whole = False
    if not whole or not unpack.eof:
        raise InputError(source, "is truncated or corrupt (its gzip-compressed voxel data cannot be read)")


_MET_GEOMETRY = ("Offset", "Origin", "Position", "ElementSpacing", "TransformMatrix", "Rotation", "Orientation")


def _check_metaimage_numbers(path: str) -> None:
    """MetaIO reads a NaN or Inf in a MetaImage header's geometry as 0 (an origin moved to 0, a
    spacing of 0): refused here, naming the field, before ITK hides it."""
    for key, value in read_header(path).fields.items():
        if key in _MET_GEOMETRY:
            try:
                finite = all(np.isfinite(float(v)) for v in value.split())
            except ValueError:
                finite = False
            if not finite:
                raise InputError(path, f"has an invalid {key} in its header ({value}); the volume cannot be placed "
                                       "in space")


def _check_metaimage_payload(path: str, size: Sequence[int]) -> None:
    """ITK's MetaImage reader prints its own lines on stderr for voxel data that end early or a data
    file that is missing, then fails with a misleading reason: check both first, from the header."""
    header, offset, _ = read_header(path)
    data_file, kind = header.get("ElementDataFile", ""), header.get("ElementType", "")
    if kind not in _MET_BYTES or "%" in data_file or data_file.upper() == "LIST" or "HeaderSize" in header:
        return  # layouts this check does not know: left to ITK
    if data_file.upper() != "LOCAL":
        source = os.path.join(os.path.dirname(path), data_file)
        if not os.path.isfile(source):
            raise InputError(path, f"its voxel data file {data_file} is missing")
        offset = 0
    else:
        source = path
    needed = int(np.prod(size, dtype=np.int64)) * _MET_BYTES[kind] * int(header.get("ElementNumberOfChannels", 1))
    if header.get("CompressedData", "False").lower() == "true":
        with open(source, "rb") as f:
            f.seek(offset)
            try:
                have = len(zlib.decompress(f.read()))
            except zlib.error:
                raise InputError(source, "is truncated or corrupt (its compressed voxel data cannot be read)") from None
    else:
        have = os.path.getsize(source) - offset
    if have < needed:
        raise InputError(source, f"is truncated: {have} bytes of voxel data of the {needed} its header announces")


def short_itk_message(exc: Exception) -> str:
    """The description in an ITK exception's message, in one short line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # ITK messages end with the useful description after 'Description:' or the last line.
    described = [ln.split("Description:", 1)[1].strip() for ln in lines if "Description:" in ln]
    text = described[0] if described else (
        re.sub(r"^ITK ERROR: (\w+)\(0x[0-9a-fA-F]+\): ", r"\1: ", lines[-1]) if lines else "unknown ITK error")
    if len(text) <= 160:
        return text
    cut = text[:160].rfind(". ")  # whole sentences where one fits
    return text[:cut + 1] if cut > 0 else text[:160]


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-4) -> bool:
    """True if both images share size, spacing, origin and direction (within ``tol``)."""
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol, rtol=tol)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=max(tol, 1e-3))
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol))


def grid_difference(a: sitk.Image, b: sitk.Image) -> str:
    """Human-readable list of what differs between the grids of ``a`` and ``b``."""
    parts = []
    for name, sep, fa, fb in (("size", "x", a.GetSize(), b.GetSize()), ("spacing", "x", a.GetSpacing(), b.GetSpacing()),
                              ("origin", ", ", a.GetOrigin(), b.GetOrigin()),
                              ("direction", ", ", a.GetDirection(), b.GetDirection())):
        ra, rb = (dims(f, sep) if sep == "x" else f"({dims(f, sep)})" for f in (fa, fb))
        if ra != rb:
            parts.append(f"{name} {ra} vs {rb}")
    return "; ".join(parts) or "sub-tolerance differences"


def geometry(img: sitk.Image) -> dict:
    """Geometry of ``img`` as plain JSON-friendly values."""
    return {
        "size": list(img.GetSize()),
        "spacing": [round(float(s), 6) for s in img.GetSpacing()],
        "origin": [round(float(o), 6) for o in img.GetOrigin()],
        "direction": [round(float(d), 6) for d in img.GetDirection()],
    }


def orientation_code(img: sitk.Image) -> str:
    """The three-letter orientation code (ITK's convention, e.g. LPS) closest to ``img``'s directions."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(img.GetDirection())


def voxel_volume_mm3(img: sitk.Image) -> float:
    return float(np.prod(img.GetSpacing()))


def voxel_volume_ml(img: sitk.Image) -> float:
    return voxel_volume_mm3(img) / 1000.0
