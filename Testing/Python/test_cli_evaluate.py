import csv
import json
import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import cli_main, make_image, one_line_error


def seg_path(phantom_dir, i):
    cid = f"Synth_7_{i:04d}"
    return os.path.join(phantom_dir, cid, f"{cid}_seg.nii.gz")


def test_evaluate_folders_writes_csv_and_json(tmp_path, phantom_dir):
    # predictions: flat folder, BraTS 2023 labels; one perfect, one with ET turned to necrosis
    preds = tmp_path / "preds"
    preds.mkdir()
    for i in range(2):
        img = sitk.ReadImage(seg_path(phantom_dir, i))
        a = sitk.GetArrayFromImage(img)
        a = np.where(a == 4, 3 if i == 0 else 1, a).astype(np.uint8)
        out = make_image(a)
        out.CopyInformation(img)
        sitk.WriteImage(out, str(preds / f"Synth_7_{i:04d}.nii.gz"))
    r = cli_main("evaluate", "--pred", str(preds), "--ref", phantom_dir,
                "--csv", str(tmp_path / "m.csv"), "--json", str(tmp_path / "m.json"))
    assert r.returncode == 0, r.stderr
    assert "Dice WT" in r.stdout and "mean" in r.stdout
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert [row["case_id"] for row in rows] == ["Synth_7_0000", "Synth_7_0001"]
    assert float(rows[0]["ET_dice"]) == 1.0 and float(rows[0]["ET_hd95"]) == 0.0
    assert float(rows[1]["WT_dice"]) == 1.0 and float(rows[1]["TC_dice"]) == 1.0
    assert float(rows[1]["ET_dice"]) == 0.0 and float(rows[1]["ET_hd95"]) == pytest.approx(373.12866)
    summary = json.load(open(tmp_path / "m.json"))
    assert summary["cases"] == 2 and summary["hd95_definition"] == "max"
    assert summary["summary"]["ET"]["dice"] == {"mean": 0.5, "median": 0.5, "std": 0.5}
    assert summary["summary"]["WT"]["volume_ref_ml"]["mean"] > 1.0


def test_evaluate_single_pair_pooled(tmp_path, phantom_dir):
    r = cli_main("evaluate", "--pred", seg_path(phantom_dir, 1), "--ref", seg_path(phantom_dir, 0),
                "--hd95", "pooled", "--csv", str(tmp_path / "x.csv"), "--json", str(tmp_path / "x.json"))
    assert r.returncode == 0, r.stderr
    js = json.load(open(tmp_path / "x.json"))
    assert js["hd95_definition"] == "pooled" and js["cases"] == 1
    assert 0 <= js["summary"]["WT"]["dice"]["mean"] < 1


def test_evaluate_missing_prediction_is_listed(tmp_path, phantom_dir):
    preds = tmp_path / "p"
    preds.mkdir()
    shutil.copy(seg_path(phantom_dir, 0), preds / "Synth_7_0000.nii.gz")
    r = cli_main("evaluate", "--pred", str(preds), "--ref", phantom_dir,
                "--csv", str(tmp_path / "m.csv"), "--json", str(tmp_path / "m.json"))
    one_line_error(r, "no prediction for 1 reference case(s): Synth_7_0001")
    assert not (tmp_path / "m.csv").exists() and not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("problem", ["missing", "truncated", "2d", "4d", "values", "grid", "nan"])
def test_evaluate_bad_input_one_line_exit_2_no_output(tmp_path, phantom_dir, problem):
    ref = seg_path(phantom_dir, 0)
    pred = str(tmp_path / "pred.nii.gz")
    a = sitk.GetArrayFromImage(sitk.ReadImage(ref))
    expect = {"missing": "file not found", "truncated": "truncated", "2d": "is a 2D image",
              "4d": "is a 4D image", "values": "label values 7 are outside", "grid": "is not on the grid of the reference",
              "nan": "contains NaN or Inf"}[problem]
    if problem == "truncated":
        shutil.copy(ref, pred)
        data = open(pred, "rb").read()
        open(pred, "wb").write(data[: len(data) // 3])
    elif problem == "2d":
        sitk.WriteImage(sitk.GetImageFromArray(a[70]), pred)
    elif problem == "4d":
        sitk.WriteImage(sitk.JoinSeries([sitk.GetImageFromArray(a)] * 2), pred)
    elif problem == "values":
        b = a.copy()
        b[0, 0, 0] = 7
        out = sitk.GetImageFromArray(b)
        out.CopyInformation(sitk.ReadImage(ref))
        sitk.WriteImage(out, pred)
    elif problem == "grid":
        sitk.WriteImage(sitk.GetImageFromArray(a[:, ::2, ::2].copy()), pred)
    elif problem == "nan":
        import nibabel as nib
        b = a.astype(np.float32)
        b[1, 1, 1] = np.nan
        nib.save(nib.Nifti1Image(b, np.eye(4)), pred)
    r = cli_main("evaluate", "--pred", pred, "--ref", ref,
                "--csv", str(tmp_path / "m.csv"), "--json", str(tmp_path / "m.json"))
    one_line_error(r, "pred.nii.gz", expect)
    assert not (tmp_path / "m.csv").exists() and not (tmp_path / "m.json").exists()


def test_evaluate_refuses_to_overwrite_an_input(tmp_path, phantom_dir):
    pred = str(tmp_path / "p.nii.gz")
    shutil.copy(seg_path(phantom_dir, 0), pred)
    before = open(pred, "rb").read()
    r = cli_main("evaluate", "--pred", pred, "--ref", seg_path(phantom_dir, 0), "--csv", pred,
                "--json", str(tmp_path / "m.json"))
    one_line_error(r, "is an input file")
    assert open(pred, "rb").read() == before
