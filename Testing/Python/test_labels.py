import numpy as np
import pytest

from BrainTumorSegLib.errors import InputError
from BrainTumorSegLib.labels import (
    SCHEMES,
    check_scheme,
    classes_to_labels,
    convert_scheme,
    detect_scheme,
    labels_to_classes,
    labels_to_regions,
    regions_to_labels,
)


@pytest.mark.parametrize("scheme", ["brats2021", "brats2023"])
def test_labels_regions_labels_round_trip(scheme):
    s = SCHEMES[scheme]
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array(s.values, np.uint8), size=(8, 9, 10))
    regions = labels_to_regions(labels, s)
    wt, tc, et = regions
    assert np.array_equal(et, labels == s.et)
    assert np.array_equal(tc, (labels == s.et) | (labels == s.ncr))
    assert np.array_equal(wt, labels > 0)
    assert np.array_equal(regions_to_labels(regions, s), labels)


def test_regions_to_labels_enforces_nesting():
    wt = np.array([0, 1, 0, 1, 0], bool)
    tc = np.array([0, 0, 1, 1, 0], bool)
    et = np.array([0, 0, 0, 1, 1], bool)
    # ET outside WT/TC still becomes ET; TC outside WT becomes NCR (rebuilt ET > TC > WT).
    assert regions_to_labels(np.stack([wt, tc, et]), "brats2021").tolist() == [0, 2, 1, 4, 4]
    assert regions_to_labels(np.stack([wt, tc, et]), "brats2023").tolist() == [0, 2, 1, 3, 3]


def test_convert_between_schemes():
    a = np.array([0, 1, 2, 4], np.uint8)
    b = convert_scheme(a, "brats2021", "brats2023")
    assert b.tolist() == [0, 1, 2, 3]
    assert convert_scheme(b, "brats2023", "brats2021").tolist() == [0, 1, 2, 4]
    assert labels_to_classes(a, "brats2021").tolist() == [0, 1, 2, 3]
    assert classes_to_labels(np.array([0, 1, 2, 3]), "brats2021").tolist() == [0, 1, 2, 4]


def test_detect_scheme():
    assert detect_scheme(np.array([0, 1, 2, 4])).name == "brats2021"
    assert detect_scheme(np.array([0, 1, 2, 3])).name == "brats2023"
    assert detect_scheme(np.array([0, 2])).name == "brats2021"  # ambiguous: default
    with pytest.raises(InputError, match=r"seg\.nii\.gz: label values 5 are outside"):
        detect_scheme(np.array([0, 1, 5]), "seg.nii.gz")
    with pytest.raises(InputError, match=r"^x\.nii: holds both label 3 and label 4; a BraTS label map uses one scheme"):
        detect_scheme(np.array([0, 1, 2, 3, 4]), "x.nii")  # mixes both schemes


def test_check_scheme_rejects_foreign_values():
    with pytest.raises(InputError, match="outside the brats2023 scheme"):
        check_scheme(np.array([0, 4]), "brats2023", "f.nii.gz")
    with pytest.raises(InputError, match="unknown label scheme"):
        check_scheme(np.array([0]), "brats2099")
