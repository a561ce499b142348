"""The three tumor segments: names, display colours and standard codes, in one place.

Shared by the Slicer module (segment names, colours and terminology entries), the DICOM SEG writer
and the QC pictures, so that a segment looks and is coded the same everywhere. The codes are SNOMED
CT concepts of the DICOM master list's "Morphologically Altered Structure" category (the General
Anatomy list has no Neoplasm); no list shipped with Slicer has "enhancing tumor", so ET carries the
closest code, Neoplasm, and its name says what it is. Nothing here imports more than the standard
library: the Slicer module reads it before any dependency is installed.
"""
from __future__ import annotations

from typing import NamedTuple, Tuple


class Code(NamedTuple):
    value: str
    scheme: str   # coding scheme designator (SCT: SNOMED CT)
    meaning: str


class Segment(NamedTuple):
    key: str                             # class name in labels.py (NCR, ED, ET); segment ID in Slicer
    title: str                           # name shown
    colour: Tuple[float, float, float]   # RGB, 0..1
    type: Code                           # segmented property type


CATEGORY = Code("49755003", "SCT", "Morphologically Altered Structure")
ANATOMY = Code("12738006", "SCT", "Brain")
SEGMENTS: Tuple[Segment, ...] = (
    Segment("NCR", "Necrotic tumor core", (0.80, 0.18, 0.18), Code("6574001", "SCT", "Necrosis")),
    Segment("ED", "Peritumoral edema", (0.35, 0.80, 0.35), Code("79654002", "SCT", "Edema")),
    Segment("ET", "Enhancing tumor", (0.98, 0.85, 0.20), Code("108369006", "SCT", "Neoplasm")),
)

_CONTEXT = "Segmentation category and type - DICOM master list"
_ANATOMY_CONTEXT = "Anatomic codes - DICOM master list"


def _slicer_code(code: Code) -> str:
    return f"{code.scheme}^{code.value}^{code.meaning}"


def slicer_terminology_entry(segment: Segment) -> str:
    """Slicer's serialised terminology entry (context~category~type~type modifier~anatomic
    context~anatomic region~region modifier) of ``segment``."""
    return (f"{_CONTEXT}~{_slicer_code(CATEGORY)}~{_slicer_code(segment.type)}~^^"
            f"~{_ANATOMY_CONTEXT}~{_slicer_code(ANATOMY)}~^^")


def cielab(colour: Tuple[float, float, float]) -> Tuple[int, int, int]:
    """An sRGB colour (0..1) as DICOM's Recommended Display CIELab Value: L*, a*, b* scaled to
    0..65535 (L* 0..100, a* and b* -128..127), under the D65 white point."""
    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in colour)
    xyz = (0.4124564 * r + 0.3575761 * g + 0.1804375 * b, 0.2126729 * r + 0.7151522 * g + 0.0721750 * b,
           0.0193339 * r + 0.1191920 * g + 0.9503041 * b)
    white = (0.9504700, 1.0, 1.0888300)

    def f(t: float) -> float:
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    fx, fy, fz = (f(v / w) for v, w in zip(xyz, white))
    lab = (116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz))
    return (round(lab[0] * 65535 / 100), round((lab[1] + 128) * 65535 / 255), round((lab[2] + 128) * 65535 / 255))
