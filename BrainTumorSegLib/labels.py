"""BraTS label schemes and the nested evaluation regions WT, TC and ET.

| scheme      | background | NCR (necrotic core) | ED (edema) | ET (enhancing) |
|-------------|-----------:|--------------------:|-----------:|---------------:|
| ``brats2021`` | 0 | 1 | 2 | 4 |
| ``brats2023`` | 0 | 1 | 2 | 3 |

Regions: WT = NCR | ED | ET, TC = NCR | ET, ET = ET. Labels are rebuilt from regions as
ET -> ET, TC minus ET -> NCR, WT minus TC -> ED (the region-based convention of the BraTS 2021
winners).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

from .errors import InputError, PathLike

REGIONS = ("WT", "TC", "ET")
CLASSES = ("NCR", "ED", "ET")  # tumor classes in channel order of softmax outputs 1..3


@dataclass(frozen=True)
class LabelScheme:
    name: str
    ncr: int
    ed: int
    et: int

    @property
    def values(self) -> tuple:
        return (0, self.ncr, self.ed, self.et)

    def class_value(self, cls: str) -> int:
        return {"NCR": self.ncr, "ED": self.ed, "ET": self.et}[cls]


SCHEMES: Dict[str, LabelScheme] = {
    "brats2021": LabelScheme("brats2021", ncr=1, ed=2, et=4),
    "brats2023": LabelScheme("brats2023", ncr=1, ed=2, et=3),
}


def get_scheme(scheme: "str | LabelScheme") -> LabelScheme:
    if isinstance(scheme, LabelScheme):
        return scheme
    try:
        return SCHEMES[scheme]
    except KeyError:
        raise InputError(None, f"unknown label scheme {scheme!r}; known: {', '.join(SCHEMES)}") from None


def detect_scheme(labels: np.ndarray, where: Optional[PathLike] = None,
                  default: str = "brats2021") -> LabelScheme:
    """The scheme whose values contain every value of ``labels``.

    Values {0, 1, 2} fit both schemes (no ET): ``default`` is returned. Any value outside both
    schemes, or 3 and 4 together, is an error naming ``where``.
    """
    present = set(np.unique(labels).tolist())
    fits = [s for s in SCHEMES.values() if present <= set(s.values)]
    if not fits:
        allowed = sorted(set().union(*(s.values for s in SCHEMES.values())))
        bad = sorted(present - set(allowed))
        if not bad:  # each value is in one scheme or the other, but 3 and 4 are never together
            raise InputError(where, "holds both label 3 and label 4; a BraTS label map uses one scheme, brats2021 "
                                    "(0,1,2,4: 4 enhancing) or brats2023 (0,1,2,3: 3 enhancing)")
        raise InputError(where, f"label values {_fmt(bad)} are outside the BraTS label schemes "
                                f"(brats2021: 0,1,2,4; brats2023: 0,1,2,3)")
    names = [s.name for s in fits]
    return SCHEMES[default] if default in names else fits[0]


def check_scheme(labels: np.ndarray, scheme: "str | LabelScheme",
                 where: Optional[PathLike] = None) -> LabelScheme:
    """Raise if ``labels`` holds values outside ``scheme``."""
    s = get_scheme(scheme)
    bad = sorted(set(np.unique(labels).tolist()) - set(s.values))
    if bad:
        raise InputError(where, f"label values {_fmt(bad)} are outside the {s.name} scheme "
                                f"({','.join(map(str, s.values))})")
    return s


def labels_to_regions(labels: np.ndarray, scheme: "str | LabelScheme") -> np.ndarray:
    """Boolean array (3, *shape) for WT, TC, ET."""
    s = get_scheme(scheme)
    et = labels == s.et
    tc = et | (labels == s.ncr)
    wt = tc | (labels == s.ed)
    return np.stack([wt, tc, et])


def regions_to_labels(regions: np.ndarray, scheme: "str | LabelScheme") -> np.ndarray:
    """uint8 labels from region masks (3, *shape); nesting is enforced (ET wins, then TC, then WT)."""
    s = get_scheme(scheme)
    wt, tc, et = (np.asarray(r, bool) for r in regions)
    out = np.zeros(wt.shape, np.uint8)
    out[wt] = s.ed
    out[tc] = s.ncr
    out[et] = s.et
    return out


def classes_to_labels(class_index: np.ndarray, scheme: "str | LabelScheme") -> np.ndarray:
    """uint8 labels from class indices 0=background, 1=NCR, 2=ED, 3=ET (softmax argmax)."""
    s = get_scheme(scheme)
    lut = np.array([0, s.ncr, s.ed, s.et], np.uint8)
    return lut[np.asarray(class_index, np.intp)]


def labels_to_classes(labels: np.ndarray, scheme: "str | LabelScheme") -> np.ndarray:
    """Class indices 0..3 (background, NCR, ED, ET) from labels of ``scheme``."""
    s = check_scheme(labels, scheme)
    lut = np.zeros(max(s.values) + 1, np.uint8)
    lut[s.ncr], lut[s.ed], lut[s.et] = 1, 2, 3
    return lut[labels.astype(np.intp)]


def convert_scheme(labels: np.ndarray, src: "str | LabelScheme", dst: "str | LabelScheme") -> np.ndarray:
    """Relabel from one scheme to another."""
    return classes_to_labels(labels_to_classes(labels, src), dst)


def _fmt(values: Sequence) -> str:
    vals = [int(v) if float(v).is_integer() else v for v in values]
    shown = ", ".join(map(str, vals[:8]))
    return shown + (", ..." if len(vals) > 8 else "")
