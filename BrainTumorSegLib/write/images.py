"""Writing volumes through SimpleITK, keeping geometry: atomic (a temporary file renamed into
place), never over an input, the output's extension checked before any work.
"""
from __future__ import annotations

import os
import shutil
from typing import Iterable, Optional

import numpy as np
import SimpleITK as sitk

from ..errors import InputError, PathLike
from ..read.formats import DETACHED, EXTENSIONS, image_extension, read_files, written_files
from .atomic import check_folder, check_not_input, commit, replacing, scratch_folder


def array_to_image(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """An image holding ``array`` (z, y, x) with exactly the geometry of ``reference``."""
    ref_size = reference.GetSize()[::-1]
    if tuple(array.shape) != tuple(ref_size):
        raise ValueError(f"array shape {array.shape} does not match reference grid {ref_size}")
    img = sitk.GetImageFromArray(array)
    img.CopyInformation(reference)
    return img


def check_output_path(path: PathLike, image: bool = True, example: Optional[str] = None) -> str:
    """Check that the output file can be written: a file name (not a folder), in an existing
    folder, with a known extension when it is an ``image``; ``example``: the file name a folder
    given instead is told to end with (default labels.nii.gz, or report.json when not an image)."""
    p = os.fspath(path)
    if os.path.isdir(p):
        example = example or ("labels.nii.gz" if image else "report.json")
        raise InputError(p, f"is a folder; give a file name, e.g. {os.path.join(p, example)}")
    ext = image_extension(p)
    if image and ext is None:
        raise InputError(p, f"unsupported output type; end the file name with one of {', '.join(EXTENSIONS)}")
    if image and ext in (".mha", ".mhd", ".nhdr") and not p.endswith(ext):
        # ITK writes them under a lower-case name, or as a header and a data file, and reads none back
        raise InputError(p, f"has its extension in upper case, under which ITK cannot write this format; end it "
                            f"with {ext}")
    check_folder(p)
    return p


def write_image(image: sitk.Image, path: PathLike, inputs: Iterable[PathLike] = (),
                compress: bool = True) -> str:
    """Write ``image`` atomically in the format named by the extension of ``path``."""
    p = check_output_path(path)
    inputs = [f for i in inputs for f in read_files(i)]
    for f in written_files(p, compress):
        check_not_input(f, inputs, p)
    ext = image_extension(p)
    folder = os.path.dirname(os.path.abspath(p))
    base = os.path.basename(p)
    if ext in DETACHED:
        # The header names its data file, so write both under their final names in a private
        # folder, move the data file first and the header last: the header is the commit.
        tmpdir = scratch_folder(p)
        header = os.path.join(tmpdir, base)
        try:
            sitk.WriteImage(image, header, compress)
        except BaseException:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        data = [(os.path.join(tmpdir, n), os.path.join(folder, n)) for n in sorted(os.listdir(tmpdir)) if n != base]
        commit([*data, (header, p)], scratch=tmpdir)
        return p
    with replacing(p, suffix=ext or ".tmp") as tmp:
        sitk.WriteImage(image, tmp, compress)
    return p


def write_labels(labels: np.ndarray, reference: sitk.Image, path: PathLike,
                 inputs: Iterable[PathLike] = ()) -> str:
    """Write a uint8 label map on exactly the grid of ``reference``."""
    return write_image(array_to_image(np.asarray(labels, np.uint8), reference), path, inputs)
