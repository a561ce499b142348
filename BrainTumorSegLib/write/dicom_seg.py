"""A DICOM Segmentation (SEG) of the result over the T1ce's own DICOM series.

BINARY, one segment per tumor class (necrotic / non-enhancing core, edema, enhancing tumor) coded
as the Slicer module codes them (:mod:`terminology`), each frame referencing the T1ce instance it
lies on, with an algorithm identification naming the model and its version. The labels are on the
T1ce's grid already (``segment`` puts them there), so frame k is the series' k-th slice exactly.
Needs the ``dicom`` extra (highdicom, pydicom). Built in memory; the caller writes the bytes
atomically.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np
import SimpleITK as sitk

from .. import __version__, extras
from ..errors import InputError
from ..labels import get_scheme
from ..read.dicom_series import Series
from ..read.images import grid_difference, same_grid
from . import terminology

# Type 2 attributes highdicom copies from the source images; de-identified series may lack them.
_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
           "StudyDate", "StudyTime", "ReferringPhysicianName")


@dataclass
class Algorithm:
    """The model that made the labels, as the SEG names it."""

    name: str                                   # model or ensemble id
    version: str
    parameters: Dict[str, str] = field(default_factory=dict)


def _sources(series: Series) -> list:
    """The T1ce's datasets, in the order of the volume's slices, without pixel data; missing type 2
    attributes are added empty (in memory only) so that de-identified series work."""
    import pydicom

    out = []
    for path in series.files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in _COPIED:
            if keyword not in ds:
                setattr(ds, keyword, None)
        for keyword in ("StudyInstanceUID", "FrameOfReferenceUID"):
            if not ds.get(keyword):
                raise InputError(path, f"has no {keyword}; a DICOM SEG cannot reference this series")
        out.append(ds)
    return out


def _descriptions(algorithm: Algorithm) -> list:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    ident = hd.AlgorithmIdentificationSequence(
        name=algorithm.name[:64], family=codes.cid7162.ArtificialIntelligence, version=algorithm.version[:64],
        source=f"braintumorseg {__version__}", parameters=algorithm.parameters or None)

    def coded(code: terminology.Code):
        return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)

    out = []
    for number, seg in enumerate(terminology.SEGMENTS, start=1):
        desc = hd.seg.SegmentDescription(
            segment_number=number, segment_label=seg.title, segmented_property_category=coded(terminology.CATEGORY),
            segmented_property_type=coded(seg.type), algorithm_type="AUTOMATIC", algorithm_identification=ident,
            anatomic_regions=[coded(terminology.ANATOMY)])
        desc.RecommendedDisplayCIELabValue = list(terminology.cielab(seg.colour))  # the Slicer module's colour
        out.append(desc)
    return out


def build(labels: sitk.Image, scheme: str, series: Series, algorithm: Algorithm) -> bytes:
    """The SEG file's bytes for ``labels`` (on ``series``' grid, in ``scheme``).

    Args:
        labels: the label map on the T1ce series' own grid.
        scheme: its label scheme (brats2021 or brats2023).
        series: the T1ce's DICOM series (:func:`dicom_series.read_series`).
        algorithm: the model's name, version and details.
    """
    extras.require("dicom")
    import highdicom as hd
    import pydicom

    if not same_grid(labels, series.image):
        raise InputError(series.folder, "the labels are not on this series' grid "
                                        f"({grid_difference(labels, series.image)}); cannot write a DICOM SEG")
    arr = sitk.GetArrayViewFromImage(labels)
    s = get_scheme(scheme)
    masks = np.stack([arr == s.class_value(seg.key) for seg in terminology.SEGMENTS], axis=-1).astype(np.uint8)
    sources = _sources(series)
    number = sources[0].get("SeriesNumber")
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=masks, segmentation_type="BINARY",
        segment_descriptions=_descriptions(algorithm), series_instance_uid=hd.UID(),
        series_number=1000 + int(number) if number not in (None, "") else 1000, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="BrainTumorSeg", manufacturer_model_name="braintumorseg",
        software_versions=__version__, device_serial_number="none", content_label="TUMOR",
        content_description="Brain tumor segmentation; research use, not a medical device")
    seg.SeriesDescription = f"Tumor segmentation ({algorithm.name})"[:64]
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, seg)
    return buffer.getvalue()


def algorithm_of(models: List[dict], ensembles: List[dict]) -> Algorithm:
    """The algorithm identification from a segment report's ``models`` and ``ensembles``."""
    name = "+".join(e["id"] for e in ensembles) if ensembles else "+".join(m["id"] for m in models)
    version = "+".join(str(m.get("version", "?")) for m in models)
    members = "; ".join(f"{m['id']} version {m.get('version', '?')} weights sha256 {str(m.get('weights_sha256'))[:16]}"
                        for m in models)
    return Algorithm(name, version, {"models": members})
