"""The files ``segment`` writes for one case, and the two made for hospitals and review: a DICOM
SEG over the T1ce's series and a QC picture.

Each extra is checked before any work (its extra package installed, its path writable, a DICOM
T1ce for the SEG), made in memory once the result is there, and written atomically after the
labels, so a failure while making either leaves no file of it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Iterable, List, Mapping, Optional, Tuple, Union

import SimpleITK as sitk

from ..errors import InputError, PathLike
from ..read.dicom_series import Series, is_series_folder
from ..read.images import read_image
from .atomic import check_not_input, write_bytes
from .images import check_output_path


@dataclass
class CaseFiles:
    """Where one case's results go; None: not asked for."""

    labels: str
    uncertainty: Optional[str] = None
    report: Optional[str] = None
    brain_mask: Optional[str] = None
    dicom_seg: Optional[str] = None
    qc: Optional[str] = None

    def paths(self) -> List[str]:
        return [p for p in (getattr(self, f.name) for f in fields(self)) if p]


def check(files: CaseFiles, inputs: Mapping[str, Optional[str]]) -> None:
    """Before any work: what the DICOM SEG and the QC picture need is there."""
    from .. import extras

    input_paths = [p for p in inputs.values() if p]
    if files.dicom_seg:
        if not is_series_folder(inputs.get("t1ce")):
            raise InputError(files.dicom_seg, "a DICOM SEG needs the T1ce as a DICOM series (a folder: --t1ce DIR, "
                                              "or a t1ce/ subfolder of the case)")
        extras.require("dicom")
        _check_path(files.dicom_seg, input_paths, "seg.dcm")
        _check_not_in_series_folder(files.dicom_seg, input_paths)
    if files.qc:
        extras.require("qc")
        _check_path(files.qc, input_paths, "qc.png")
        if not files.qc.lower().endswith(".png"):
            raise InputError(files.qc, "a QC picture is a PNG file; name it .png")


def _check_path(path: str, inputs: Iterable[PathLike], example: str) -> None:
    check_output_path(path, image=False, example=example)
    check_not_input(path, inputs)


def _check_not_in_series_folder(path: str, inputs: Iterable[str]) -> None:
    """A DICOM file written into an input series folder would join that folder's series (the next
    run would find two). Compared where the file would land: the folder the link lives in, if a link."""
    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    for p in inputs:
        if is_series_folder(p) and os.path.realpath(p) == folder:
            raise InputError(path, f"is inside the input series folder {p}; a DICOM SEG written there would join "
                                   "that input: write it elsewhere")


def _image(value: Union[str, sitk.Image]) -> sitk.Image:
    return value if isinstance(value, sitk.Image) else read_image(value)


def make(files: CaseFiles, result, images: Mapping[str, Union[str, sitk.Image]], t1ce_series: Optional[Series],
         case_id: str) -> List[Tuple[str, bytes]]:
    """The DICOM SEG's and the QC picture's bytes, as asked for in ``files`` (nothing written).

    Args:
        files: the outputs asked for.
        result: the :class:`inference.SegmentationResult`.
        images: the inputs segmented (paths or images), for the QC picture's T1ce and FLAIR.
        t1ce_series: the T1ce's DICOM series, for the SEG.
        case_id: the QC picture's title.
    """
    from .dicom_seg import algorithm_of

    algorithm = algorithm_of(result.models, result.ensembles)
    pending: List[Tuple[str, bytes]] = []
    if files.dicom_seg:
        from . import dicom_seg

        if t1ce_series is None:
            raise InputError(files.dicom_seg, "a DICOM SEG needs the T1ce as a DICOM series")
        pending.append((files.dicom_seg, dicom_seg.build(result.labels, result.label_scheme, t1ce_series, algorithm)))
    if files.qc:
        from . import qc_picture

        t1ce = _image(images["t1ce"])
        flair = _image(images["flair"]) if images.get("flair") is not None else t1ce
        pending.append((files.qc, qc_picture.render(case_id, t1ce, flair, result.labels, result.label_scheme,
                                                    result.volumes_ml, f"{algorithm.name} (version {algorithm.version})",
                                                    result.uncertainty)))
    return pending


def write(pending: List[Tuple[str, bytes]], inputs: Iterable[PathLike]) -> None:
    for path, data in pending:
        write_bytes(path, data, inputs)
