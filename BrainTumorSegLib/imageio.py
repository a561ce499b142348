"""Reading and writing volumes through SimpleITK, keeping geometry, with atomic writes.

Formats: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) and MetaImage (.mha, .mhd), and for images a
folder holding one DICOM series (:mod:`dicom_series`); the output
format is the one named by the output extension. Every read checks that the file is a readable
3D scalar volume with finite values; every write goes to a temporary name in the output folder
and is renamed into place, so a crash or cancel never leaves a partial file.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import zlib
from typing import Any, Iterable, Optional

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from .atomicfile import replacing
from .errors import InputError, PathLike

EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
# Formats that write a separate data file next to the header.
_DETACHED = {".nhdr", ".mhd"}


def image_extension(path: PathLike) -> Optional[str]:
    """The supported extension of ``path`` (lower case), or None."""
    name = os.fspath(path).lower()
    for ext in EXTENSIONS:
        if name.endswith(ext):
            return ext
    return None


def strip_extension(name: str) -> str:
    ext = image_extension(name)
    return name[: -len(ext)] if ext else name


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
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise InputError(p, f"cannot be read as an image ({_short_itk_message(exc)})") from None
    arr = sitk.GetArrayViewFromImage(img)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError(p, "contains NaN or Inf values")
    if kind == "image":
        if not arr.any():
            raise InputError(p, "is all zero")
        return sitk.Cast(img, sitk.sitkFloat32)
    if kind == "label":
        if arr.dtype.kind == "f":
            if not np.array_equal(arr, np.round(arr)):
                raise InputError(p, "holds non-integer values; a label map is expected")
            img = sitk.Cast(img, sitk.sitkInt32)
        return img
    raise ValueError(f"unknown kind {kind!r}")


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
    reader = sitk.ImageFileReader()
    reader.SetFileName(p)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(p, f"cannot be read as an image ({_short_itk_message(exc)})") from None
    dim, size, ncomp = reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents()
    if dim != 3:
        raise InputError(p, f"is a {dim}D image of size {'x'.join(map(str, size))}; a 3D volume is expected")
    if ncomp != 1:
        raise InputError(p, f"has {ncomp} components per voxel; a scalar 3D volume is expected")
    if min(size) < 2:
        raise InputError(p, f"has size {'x'.join(map(str, size))}; a 3D volume with at least 2 voxels per axis is expected")
    return reader


def _check_nifti_payload(path: str) -> None:
    """ITK's NIfTI reader fills a truncated file with garbage and turns NaN/Inf into 0 without a
    word: read the voxel data once through nibabel to check that it is whole and finite."""
    try:
        img: Any = nib.load(path)  # a NIfTI image (nibabel's stubs type it as any file-based image)
        header = img.header
        needed = int(header.get_data_offset()) + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
        if not path.lower().endswith(".gz") and os.path.getsize(path) < needed:
            raise InputError(path, f"is truncated: {os.path.getsize(path)} bytes of the {needed} its header announces")
        data = np.asanyarray(img.dataobj.get_unscaled())
    except InputError:
        raise
    except (EOFError, OSError, ValueError, zlib.error):
        raise InputError(path, "is truncated or corrupt (the voxel data end early)") from None
    except Exception as exc:  # nibabel raises many types for bad headers
        raise InputError(path, f"cannot be read as NIfTI ({str(exc).splitlines()[0][:120]})") from None
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise InputError(path, "contains NaN or Inf values")


def _short_itk_message(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # ITK messages end with the useful description after 'Description:' or the last line.
    for ln in lines:
        if "Description:" in ln:
            return ln.split("Description:", 1)[1].strip()[:160]
    return (lines[-1] if lines else "unknown reader error")[:160]


def array_to_image(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """An image holding ``array`` (z, y, x) with exactly the geometry of ``reference``."""
    ref_size = reference.GetSize()[::-1]
    if tuple(array.shape) != tuple(ref_size):
        raise ValueError(f"array shape {array.shape} does not match reference grid {ref_size}")
    img = sitk.GetImageFromArray(array)
    img.CopyInformation(reference)
    return img


def check_not_input(out_path: PathLike, inputs: Iterable[PathLike]) -> None:
    """Raise if ``out_path`` is one of ``inputs`` (never overwrite an input file)."""
    out = os.path.realpath(os.fspath(out_path))
    for p in inputs:
        if p is None:
            continue
        if os.path.realpath(os.fspath(p)) == out:
            raise InputError(out_path, "is an input file; refusing to overwrite it")


def check_output_path(path: PathLike, image: bool = True) -> str:
    """Check that the output file can be written: a file name (not a folder), in an existing
    folder, with a known extension when it is an ``image``."""
    p = os.fspath(path)
    if os.path.isdir(p):
        raise InputError(p, f"is a folder; give a file name, e.g. {os.path.join(p, 'labels.nii.gz' if image else 'report.json')}")
    if image and image_extension(p) is None:
        raise InputError(p, f"unsupported output type; end the file name with one of {', '.join(EXTENSIONS)}")
    folder = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(folder):
        raise InputError(p, "output folder does not exist; create it first")
    return p


def write_image(image: sitk.Image, path: PathLike, inputs: Iterable[PathLike] = (),
                compress: bool = True) -> str:
    """Write ``image`` atomically in the format named by the extension of ``path``."""
    p = check_output_path(path)
    check_not_input(p, inputs)
    ext = image_extension(p)
    folder = os.path.dirname(os.path.abspath(p))
    base = os.path.basename(p)
    if ext in _DETACHED:
        # The header names its data file, so write both under their final names in a private
        # folder, move the data file first and the header last: the header is the commit.
        tmpdir = tempfile.mkdtemp(prefix=".btseg-", dir=folder)
        try:
            sitk.WriteImage(image, os.path.join(tmpdir, base), compress)
            header = os.path.join(tmpdir, base)
            for name in sorted(os.listdir(tmpdir)):
                if name != base:
                    os.replace(os.path.join(tmpdir, name), os.path.join(folder, name))
            os.replace(header, p)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
        return p
    with replacing(p, suffix=ext or ".tmp") as tmp:
        sitk.WriteImage(image, tmp, compress)
    return p


def write_labels(labels: np.ndarray, reference: sitk.Image, path: PathLike,
                 inputs: Iterable[PathLike] = ()) -> str:
    """Write a uint8 label map on exactly the grid of ``reference``."""
    return write_image(array_to_image(np.asarray(labels, np.uint8), reference), path, inputs)


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-4) -> bool:
    """True if both images share size, spacing, origin and direction (within ``tol``)."""
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol, rtol=tol)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=max(tol, 1e-3))
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol))


def grid_difference(a: sitk.Image, b: sitk.Image) -> str:
    """Human-readable list of what differs between the grids of ``a`` and ``b``."""
    parts = []
    for name, fa, fb in (("size", a.GetSize(), b.GetSize()), ("spacing", a.GetSpacing(), b.GetSpacing()),
                         ("origin", a.GetOrigin(), b.GetOrigin()),
                         ("direction", a.GetDirection(), b.GetDirection())):
        ra = tuple(round(float(x), 3) for x in fa)
        rb = tuple(round(float(x), 3) for x in fb)
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


def voxel_volume_ml(img: sitk.Image) -> float:
    return float(np.prod(img.GetSpacing())) / 1000.0
