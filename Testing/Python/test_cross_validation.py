"""The recipe's fold table and the per-grade figures (no real data needed)."""
import pytest

from BrainTumorSegLib.evaluation.cross_validation import FOLDS, GRADES, HGG, LITTLE_ET, LOW_GRADE, grade_summary, institution


def test_every_case_is_held_out_once_and_folds_are_stratified():
    cases = [c for f in FOLDS for c in f]
    assert len(FOLDS) == 5 and len(cases) == len(set(cases)) == 32
    for fold in FOLDS:
        rare = [c for c in fold if GRADES[c] != HGG]
        assert 1 <= len(rare) <= 2, fold  # each of the eight low-grade or non-enhancing cases apart
        assert any(GRADES[c] in LOW_GRADE for c in fold) or any(GRADES[c] == LITTLE_ET for c in fold)
        assert len({institution(c) for c in fold}) >= 3, fold
        assert 6 <= len(fold) <= 7
    assert sum(GRADES[c] == HGG for c in cases) == 24 and sum(GRADES[c] in LOW_GRADE for c in cases) == 6


def _row(dice: float, et_ref: float, et_err: float):
    return {r: {"dice": dice, "hd95": 2.0, "volume_error_ml": et_err if r == "ET" else 0.0,
                "volume_ref_ml": et_ref if r == "ET" else 10.0} for r in ("WT", "TC", "ET")}


def test_grade_summary_splits_means_by_grade_and_counts_empty_et():
    per_case = {"Brats18_CBICA_AQO_1": _row(0.9, 5.0, 1.0), "Brats18_TCIA10_628_1": _row(0.3, 0.5, 0.0),
                "BraTS2021_01477": _row(0.5, 0.0, 0.0), "BraTS2021_01484": _row(0.7, 0.0, 2.5),
                "BraTS2021_01476": _row(0.6, 1.0, -0.5)}
    g = grade_summary(per_case)
    assert g["all"]["cases"] == 5 and g["HGG"]["cases"] == 1 and g["low-grade"]["cases"] == 3
    assert g["low-grade"]["dice_TC"] == pytest.approx(0.5) and g["HGG"]["dice_WT"] == pytest.approx(0.9)
    assert g["little-ET"]["dice_ET"] == pytest.approx(0.6) and g["all"]["dice_WT"] == pytest.approx(0.6)
    assert g["without_et"] == {"cases": 2, "none_predicted": 1}
    assert grade_summary({"Brats18_CBICA_AQO_1": _row(0.9, 5.0, 1.0)})["low-grade"] == {"cases": 0}
