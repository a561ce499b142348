"""Cases without a T1 or a T2, and sequences that cover only part of the brain."""
import numpy as np
import pytest
import SimpleITK as sitk
from test_inference import small_case_dir, tiny_bundle  # noqa: F401 - fixtures

from BrainTumorSegLib.errors import InputError
from BrainTumorSegLib.models import ensembles
from BrainTumorSegLib.pipeline import segment
from BrainTumorSegLib.read.cases import find_case


@pytest.fixture(scope="module")
def bundle(tiny_bundle):  # noqa: F811
    return tiny_bundle


@pytest.mark.parametrize("left_out", ["t1", "t2"])
def test_a_case_without_t1_or_t2_is_segmented_with_that_channel_empty(bundle, small_case_dir, left_out):  # noqa: F811
    seqs = find_case(small_case_dir).sequences
    res = segment({r: p for r, p in seqs.items() if r != left_out}, bundle, "cpu")
    assert res.preprocessing["sequences_missing"] == [left_out]
    assert any(w.startswith(f"no {left_out} given") for w in res.warnings)
    assert left_out not in res.preprocessing["coverage_of_brain"]
    ref = sitk.ReadImage(seqs["t1ce"])
    assert res.labels.GetSize() == ref.GetSize()
    # the empty channel reaches the network: its output differs from the four-sequence one
    full = segment(seqs, bundle, "cpu")
    assert res.probabilities.shape == full.probabilities.shape
    assert not np.array_equal(res.probabilities, full.probabilities)


def test_a_case_without_t1_is_told_what_the_model_did_without_it(bundle, small_case_dir, tmp_path):  # noqa: F811
    """Where the model's manifest holds its held-out figures with T1 left out (``ensemble
    --validate-on`` records them), a case without T1 gets them beside the four-sequence ones; a
    model without them, or a case with every sequence, gets no such line."""
    def means(wt, tc, et):
        return {"dice_WT": wt, "dice_TC": tc, "dice_ET": et}

    table = {"cases": ["a", "b", "c"], "mean": means(0.85, 0.77, 0.70),
             "missing_sequences": {"no T1": {"mean": means(0.84, 0.76, 0.65)}, "no T2": {"mean": {"dice_WT": "?"}}}}
    measured = str(ensembles.save_ensemble(tmp_path / "measured", [bundle, bundle],
                                           {"metrics": {"out_of_fold_postprocessed": table}}))
    seqs = find_case(small_case_dir).sequences
    line = ("measured on 3 held-out cases with t1 left out: Dice WT 0.84, TC 0.76, ET 0.65 "
            "(all four sequences: WT 0.85, TC 0.77, ET 0.70)")
    assert line in segment({r: p for r, p in seqs.items() if r != "t1"}, measured, "cpu").warnings
    for inputs, model in (({r: p for r, p in seqs.items() if r != "t2"}, measured),  # its no-T2 figures unreadable
                          (seqs, measured), ({r: p for r, p in seqs.items() if r != "t1"}, bundle)):
        assert not any("left out" in w for w in segment(inputs, model, "cpu").warnings)


@pytest.mark.parametrize("left_out", ["t1ce", "flair"])
def test_t1ce_and_flair_stay_required(bundle, small_case_dir, left_out):  # noqa: F811
    seqs = find_case(small_case_dir).sequences
    with pytest.raises(InputError, match=f"no {left_out} given") as e:
        segment({r: p for r, p in seqs.items() if r != left_out}, bundle, "cpu")
    assert "t1 and t2 may be left out" in str(e.value)


def test_a_sequence_covering_part_of_the_brain_is_measured_and_warned_about(bundle, small_case_dir, tmp_path):  # noqa: F811
    seqs = find_case(small_case_dir).sequences
    full = segment(seqs, bundle, "cpu")
    assert min(full.preprocessing["coverage_of_brain"].values()) >= 0.9
    assert not any("covers only" in w for w in full.warnings)
    t1 = sitk.ReadImage(seqs["t1"])
    arr = sitk.GetArrayFromImage(t1)
    arr[: arr.shape[0] // 2] = 0  # the lower half of the slices missing, as a slab acquisition
    part = sitk.GetImageFromArray(arr)
    part.CopyInformation(t1)
    path = str(tmp_path / "partial_t1.nii.gz")
    sitk.WriteImage(part, path)
    res = segment(dict(seqs, t1=path), bundle, "cpu")
    cov = res.preprocessing["coverage_of_brain"]
    assert 0.2 < cov["t1"] < 0.8 and cov["t1ce"] >= 0.9
    assert any(w.startswith(f"{path}: covers only") for w in res.warnings)


def test_cli_segments_a_case_folder_without_t2_and_refuses_one_without_flair(bundle, small_case_dir, tmp_path):  # noqa: F811
    import shutil

    from conftest import cli_main, one_line_error

    case = tmp_path / "NoT2_0001"
    shutil.copytree(small_case_dir, case)
    for f in case.iterdir():
        f.rename(case / f.name.replace("Small_0000", "NoT2_0001"))
    (case / "NoT2_0001_t2.nii.gz").unlink()
    r = cli_main("segment", "--case", str(case), "--model", bundle, "-o", str(tmp_path / "seg.nii.gz"))
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("no t2 given") == 1 and (tmp_path / "seg.nii.gz").exists()  # said once
    (case / "NoT2_0001_flair.nii.gz").unlink()
    r = cli_main("segment", "--case", str(case), "--model", bundle, "-o", str(tmp_path / "seg2.nii.gz"))
    one_line_error(r, "has no flair file")
    assert not (tmp_path / "seg2.nii.gz").exists()
