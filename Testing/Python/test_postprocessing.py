import numpy as np
import pytest
import SimpleITK as sitk

from BrainTumorSegLib.evaluation.real_validation import RawLabels, score_raw
from BrainTumorSegLib.models.ensembles import held_out_table
from BrainTumorSegLib.postprocess import reliability
from BrainTumorSegLib.postprocess.cleanup import PostprocessOptions, postprocess, remove_small_components


def tumor():
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[4:16, 4:16, 4:16] = 2       # edema
    lab[7:13, 7:13, 7:13] = 4       # enhancing shell ...
    lab[9:11, 9:11, 9:11] = 1       # ... around necrosis
    return lab


def test_all_off_by_default_changes_nothing():
    lab = tumor()
    lab[0, 0, 0] = 2
    assert np.array_equal(postprocess(lab, "brats2021"), lab)


def test_small_et_relabelled_only_below_threshold():
    lab = tumor()
    n_et = int((lab == 4).sum())
    kept = postprocess(lab, "brats2021", PostprocessOptions(min_et_voxels=n_et + 1))
    assert not (kept == 4).any() and (kept == 1).sum() == (lab == 1).sum() + n_et
    untouched = postprocess(lab, "brats2021", PostprocessOptions(min_et_voxels=n_et))  # not below
    assert np.array_equal(untouched, lab)
    lab3 = np.where(lab == 4, 3, lab).astype(np.uint8)
    assert not (postprocess(lab3, "brats2023", PostprocessOptions(min_et_voxels=10 ** 6)) == 3).any()


def test_the_thresholds_are_volumes_of_1mm3_voxels_on_any_grid():
    """A model chooses its thresholds on BraTS's 1 mm grid; on a clinical T1ce's 0.9 x 0.9 x 5.5 mm
    voxels (4.455 mm^3) the same volume is meant: 500 voxels there would be 2.2 mL, not 0.5."""
    lab = tumor()
    n_et = int((lab == 4).sum())
    thick = 0.9 * 0.9 * 5.5
    keep_et = PostprocessOptions(min_et_voxels=n_et + 1)  # fewer voxels than this, but more mm^3
    assert np.array_equal(postprocess(lab, "brats2021", keep_et, voxel_mm3=thick), lab)
    drop_et = PostprocessOptions(min_et_voxels=int(n_et * thick) + 1)
    assert not (postprocess(lab, "brats2021", drop_et, voxel_mm3=thick) == 4).any()
    lab[0, 0, 0] = 2  # one voxel of 4.455 mm^3
    assert postprocess(lab, "brats2021", PostprocessOptions(min_component_voxels=4), voxel_mm3=thick)[0, 0, 0] == 2
    assert postprocess(lab, "brats2021", PostprocessOptions(min_component_voxels=5), voxel_mm3=thick)[0, 0, 0] == 0


def test_small_components_removed():
    lab = tumor()
    lab[0, 0, 0] = 2
    lab[18:20, 18:20, 18:20] = 4  # 8 voxels
    out = postprocess(lab, "brats2021", PostprocessOptions(min_component_voxels=9))
    assert out[0, 0, 0] == 0 and not out[18:, 18:, 18:].any()
    assert np.array_equal(out[1:17, 1:17, 1:17], lab[1:17, 1:17, 1:17])
    # diagonal neighbours belong to one 26-connected component
    m = np.zeros((4, 4, 4), bool)
    m[0, 0, 0] = m[1, 1, 1] = True
    assert remove_small_components(m, 2).sum() == 2


def test_holes_in_core_filled():
    lab = tumor()
    lab[9:11, 9:11, 9:11] = 2  # an edema 'hole' inside the enhancing shell
    out = postprocess(lab, "brats2021", PostprocessOptions(fill_core_holes=True))
    assert (out[9:11, 9:11, 9:11] == 1).all()
    assert np.array_equal(out[lab != 2], lab[lab != 2])
    assert (out == 2).sum() == (lab == 2).sum() - 8


def _row(wt_pred, et_pred, dice_wt, dice_tc, wt_ref=None):
    """One held-out case as the validation tables record it (predicted = reference + error)."""
    wt_ref = wt_pred if wt_ref is None else wt_ref
    return {"WT": {"dice": dice_wt, "volume_ref_ml": wt_ref, "volume_error_ml": wt_pred - wt_ref},
            "TC": {"dice": dice_tc, "volume_ref_ml": 1.0, "volume_error_ml": 0.0},
            "ET": {"dice": 0.5, "volume_ref_ml": 2.0, "volume_error_ml": et_pred - 2.0}}


def test_the_non_enhancing_pattern_is_little_et_in_a_real_tumor():
    assert reliability.non_enhancing({"WT": 100.0, "ET": 1.9})
    assert not reliability.non_enhancing({"WT": 100.0, "ET": 2.0})   # 2 %: not below
    assert reliability.non_enhancing({"WT": 1.0, "ET": 0.0})
    assert not reliability.non_enhancing({"WT": 0.9, "ET": 0.0})     # no tumor to speak of
    assert reliability.warning({"WT": 80.0, "ET": 20.0}, "m", None) is None


def test_the_warning_quotes_the_models_held_out_cases_split_by_the_pattern():
    table = {"a": _row(100.0, 0.0, 0.8, 0.4, wt_ref=140.0), "b": _row(50.0, 0.5, 0.6, 0.2, wt_ref=50.0),
             "c": _row(60.0, 10.0, 0.9, 0.9)}
    s = reliability.pattern_summary(table)
    assert s["pattern"]["cases"] == 2 and s["others"]["cases"] == 1
    assert np.isclose(s["pattern"]["dice_TC"], 0.3) and np.isclose(s["pattern"]["volume_error_ml_WT"], -20.0)
    w = reliability.warning({"WT": 208.0, "ET": 0.4}, "model-x", table)
    assert w.startswith("little or no enhancing tumor (ET 0.4 mL of a 208.0 mL whole tumor)")
    assert "model-x on held-out cases, 2 like this: Dice WT 0.70, TC 0.30, whole tumor 20 mL too small" in w
    assert "1 others: WT 0.90, TC 0.90" in w and "\n" not in w
    # no table, or one of another form: the pattern is still named, without figures
    for held_out in (None, {}, {"a": {"WT": 0.8}}):
        w = reliability.warning({"WT": 208.0, "ET": 0.4}, "model-x", held_out)
        assert w.startswith("little or no enhancing tumor") and "model-x" not in w


def test_the_held_out_table_a_manifest_records_best_first():
    rows = {"a": _row(1.0, 0.0, 0.5, 0.5)}
    other = {"b": _row(1.0, 0.0, 0.5, 0.5)}
    assert held_out_table({"metrics": {"validation_segment": {"per_case": rows}}}) == rows
    assert held_out_table({"metrics": {"out_of_fold": {"per_case": other},
                                       "out_of_fold_postprocessed": {"per_case": rows}}}) == rows
    for doc in ({}, {"metrics": []}, {"metrics": {"held_out_synthetic": {"per_case": rows}}},
                {"metrics": {"out_of_fold": {"per_case": {}}}}):
        assert held_out_table(doc) is None


def raw_labels(arrays, references):
    """RawLabels of label arrays (brats2021 scheme, 1 mm voxels) against reference arrays, by case id."""
    def image(a):
        return sitk.GetImageFromArray(np.asarray(a, np.uint8))

    return RawLabels({c: image(a) for c, a in arrays.items()}, {c: image(a) for c, a in references.items()},
                     {c: f"{c}_seg.nii.gz" for c in arrays}, {c: 1.0 for c in arrays}, "brats2021")


def test_the_chosen_setting_holds_without_a_sequence_too():
    """A setting that only the missing-sequence condition tells apart is chosen once that condition
    takes part: a tumor without enhancement given a 392-voxel enhancing spot without T1 (as v14's
    folds did) is cleared by the 500-voxel rule, which the four-sequence labels alone cannot prefer."""
    enhancing = np.zeros((40, 40, 40), np.uint8)
    enhancing[5:35, 5:35, 5:35] = 2
    enhancing[10:30, 10:30, 10:30] = 4        # 8000 voxels: kept by every rule
    enhancing[15:25, 15:25, 15:25] = 1
    without_et = np.zeros_like(enhancing)
    without_et[5:35, 5:35, 5:35] = 2
    without_et[12:28, 12:28, 12:28] = 1
    spot = without_et.copy()
    spot[14:21, 14:21, 14:22] = 4             # 392 voxels of enhancing tumor the reference does not have
    refs = {"A": enhancing, "B": without_et}
    four = raw_labels(refs, refs)
    no_t1 = raw_labels({"A": enhancing, "B": spot}, refs)

    report, chosen = score_raw(four)
    assert chosen.min_et_voxels == 0 and report["mean"]["dice_ET"] == 1.0   # all settings tie: the first
    assert "missing_sequences" not in report and report["postprocessing_search"]["conditions"] == ["all four"]

    report, chosen = score_raw(four, missing={"no T1": no_t1})
    assert chosen.min_et_voxels == 500 and chosen.min_component_voxels == 0
    search = report["postprocessing_search"]
    assert search["conditions"] == ["all four", "no T1"]
    for (setting, criterion), a, b in zip(search["mean_dice"], *search["by_condition"].values()):
        assert criterion == pytest.approx((a + b) / 2)
        assert b < 1.0 if setting["min_et_voxels"] < 500 else b == 1.0
    missing = report["missing_sequences"]["no T1"]
    assert missing["mean"]["dice_ET"] == 1.0 and missing["by_grade"]["without_et"]["none_predicted"] == 1
    assert report["mean"]["dice_ET"] == 1.0  # the four-sequence figures, with the chosen setting
