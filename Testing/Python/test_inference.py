import json
import os
import re
import signal
import subprocess
import sys
import threading
from typing import Dict, List

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import cli_main, one_line_error, run_cli, save_tiny_bundle

import BrainTumorSegLib
from BrainTumorSegLib.errors import Cancelled, InputError
from BrainTumorSegLib.evaluation.cross_validation import GRADES
from BrainTumorSegLib.models import bundles, ensembles
from BrainTumorSegLib.networks import build
from BrainTumorSegLib.pipeline import segment
from BrainTumorSegLib.postprocess.on_reference import probabilities_to_labels
from BrainTumorSegLib.preprocess.transform import PreprocessOptions, preprocess
from BrainTumorSegLib.read.cases import find_case
from BrainTumorSegLib.read.images import same_grid
from BrainTumorSegLib.segment_options import NO_POSTPROCESSING, SegmentOptions


@pytest.fixture(scope="module")
def small_case_dir(tmp_path_factory, phantom_case_dir):
    """The phantom case resampled to 2 mm (120 x 120 x 78): a real case on disk, 8x cheaper."""
    out = tmp_path_factory.mktemp("small") / "Small_0000"
    out.mkdir()
    for role, p in find_case(phantom_case_dir).paths.items():
        img = sitk.ReadImage(p)
        grid = sitk.Image([120, 120, 78], img.GetPixelID())
        grid.SetSpacing((2.0, 2.0, 2.0))
        grid.SetOrigin([o + 0.5 for o in img.GetOrigin()])
        interp = sitk.sitkNearestNeighbor if role == "seg" else sitk.sitkLinear
        sitk.WriteImage(sitk.Resample(img, grid, sitk.Transform(), interp, 0), str(out / f"Small_0000_{role}.nii.gz"))
    return str(out)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory, phantom_case_dir):
    """A small network with random weights, calibrated on the phantom taken to 2 mm (conftest.save_tiny_bundle)."""
    data = preprocess(find_case(phantom_case_dir).sequences).data[:, ::2, ::2, ::2]
    return save_tiny_bundle(data, tmp_path_factory.mktemp("bundles") / "tiny")


def labels_of(res):
    return sitk.GetArrayFromImage(res.labels)


def test_bundle_round_trip_and_hash_check(tiny_bundle, tmp_path):
    b = bundles.load(tiny_bundle)
    m = json.load(open(os.path.join(tiny_bundle, "manifest.json")))
    assert m["weights_sha256"] == bundles.sha256_of(os.path.join(tiny_bundle, "weights.safetensors"))
    assert m["in_sequences"] == ["t1", "t1ce", "t2", "flair"] and m["output_kind"] == "sigmoid"
    again = bundles.save(b.network, tmp_path / "copy", {k: v for k, v in m.items() if k != "weights_sha256"})
    b2 = bundles.load(again)
    for (k1, v1), (k2, v2) in zip(b.network.state_dict().items(), b2.network.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    # a flipped byte in the weights is refused before they are read
    w = tmp_path / "copy" / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256 .* does not match the manifest"):
        bundles.load(tmp_path / "copy")
    with pytest.raises(InputError, match="is not a model bundle"):
        bundles.load(tmp_path)
    with pytest.raises(InputError, match="no such model"):
        bundles.load("no-such-model-name")


@pytest.mark.parametrize("field, value, says", [
    ("patch_size", [64, 64], "field patch_size is [64, 64]; expected three positive integers"),
    ("output_kind", "softplus", "field output_kind is 'softplus'; expected softmax or sigmoid"),
    ("in_sequences", [], "field in_sequences is []"),
    ("label_scheme", "brats2030", "field label_scheme"),
    ("weights_sha256", "abc", "expected 64 hexadecimal digits"),
    ("preprocessing", {"spacing_mm": -2}, "field preprocessing.spacing_mm is -2"),
])
def test_manifest_format_check_names_the_file_and_field(tiny_bundle, tmp_path, field, value, says):
    """A typed manifest: a wrong field is one line naming manifest.json and the field, before any
    weights are read; a good one reads back with its typed fields."""
    m = bundles.read_manifest(tiny_bundle)
    assert m.patch_size == (64, 64, 64) and m.output.channels == 3 and m.spacing_mm == 2.0 and m.in_sequences[1] == "t1ce"
    bad = tmp_path / "bad"
    bad.mkdir()
    doc = dict(m.to_json(), **{field: value})
    (bad / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match=re.escape(says)) as err:
        bundles.load(bad)
    assert "manifest.json" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("code", ["RAS", "PIR", "LPI"])
def test_same_labels_in_physical_space_whatever_the_stored_orientation(tiny_bundle, small_case_dir, tmp_path, code):
    case = find_case(small_case_dir)
    base = segment(case.sequences, tiny_bundle, "cpu")
    stored = {}
    for role, p in case.sequences.items():
        out = str(tmp_path / f"{role}_{code}.nrrd")
        sitk.WriteImage(sitk.DICOMOrient(sitk.ReadImage(p), code), out)
        stored[role] = out
    res = segment(stored, tiny_bundle, "cpu")
    assert same_grid(res.labels, sitk.ReadImage(stored["t1ce"]))
    back = sitk.DICOMOrient(res.labels, "LPS")
    assert np.array_equal(sitk.GetArrayFromImage(back), labels_of(base))
    assert 500 < (labels_of(base) > 0).sum()  # the comparison is not between empty maps


def resample(img, spacing, size, origin_shift=(0, 0, 0)):
    """``img`` on a grid of ``spacing`` and ``size`` from its origin (shifted): a clinical-like grid."""
    grid = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    grid.SetSpacing(spacing)
    grid.SetOrigin([o + s for o, s in zip(img.GetOrigin(), origin_shift)])
    return sitk.Resample(img, grid, sitk.Transform(), sitk.sitkLinear, 0.0)


def test_clinical_like_inputs_on_other_grids_give_labels_on_the_t1ce_grid(tiny_bundle, small_case_dir):
    case = find_case(small_case_dir)
    imgs = {r: sitk.ReadImage(p, sitk.sitkFloat32) for r, p in case.sequences.items()}
    t1ce = resample(imgs["t1ce"], (1.8, 1.8, 2.4), (133, 133, 65))
    flair = resample(imgs["flair"], (1.8, 1.8, 6.0), (133, 133, 26), (0, 0, 2.0))  # thick slices
    t2 = resample(imgs["t2"], (2.0, 2.0, 4.0), (120, 120, 39))
    res = segment({"t1": imgs["t1"], "t1ce": t1ce, "t2": t2, "flair": flair}, tiny_bundle, "cpu",
                  SegmentOptions(uncertainty=True))
    assert same_grid(res.labels, t1ce) and same_grid(res.uncertainty, t1ce)
    assert res.labels.GetPixelID() == sitk.sitkUInt8
    assert (labels_of(res) > 0).any()
    u = sitk.GetArrayFromImage(res.uncertainty)
    assert 0 <= u.min() and u.max() <= 1 and u.max() > 0.5


def test_on_a_clinical_grid_the_enhancing_tumor_rule_counts_the_volume_not_the_voxels(tiny_bundle, small_case_dir):
    case = find_case(small_case_dir)
    imgs = {r: sitk.ReadImage(p, sitk.sitkFloat32) for r, p in case.sequences.items()}
    imgs["t1ce"] = resample(imgs["t1ce"], (1.8, 1.8, 2.4), (133, 133, 65))  # 7.776 mm^3 a voxel
    off = labels_of(segment(imgs, tiny_bundle, "cpu", SegmentOptions(min_et_voxels=0, min_component_voxels=0)))
    n_et = int((off == 4).sum())
    assert n_et > 10
    fewer_voxels_more_volume = segment(imgs, tiny_bundle, "cpu", SegmentOptions(min_et_voxels=n_et + 1,
                                                                                min_component_voxels=0))
    # kept (a few voxels may differ between runs: bf16 near the random network's thresholds)
    assert int((labels_of(fewer_voxels_more_volume) == 4).sum()) > 0.99 * n_et
    smaller_volume = segment(imgs, tiny_bundle, "cpu", SegmentOptions(min_et_voxels=int(n_et * 7.776 * 1.05),
                                                                      min_component_voxels=0))
    assert not (labels_of(smaller_volume) == 4).any()


def test_array_inputs_with_geometry(tiny_bundle, small_case_dir):
    case = find_case(small_case_dir)
    base = segment(case.sequences, tiny_bundle, "cpu")
    arrays = {}
    for r, p in case.sequences.items():
        img = sitk.ReadImage(p)
        arrays[r] = (sitk.GetArrayFromImage(img), {"spacing": img.GetSpacing(), "origin": img.GetOrigin(),
                                                   "direction": img.GetDirection()})
    import BrainTumorSegLib

    res = BrainTumorSegLib.segment(arrays, bundles.load(tiny_bundle), "cpu")  # the public entry point
    assert np.array_equal(labels_of(res), labels_of(base))
    voxel_ml = np.prod(res.labels.GetSpacing()) / 1000  # 2 mm voxels: 0.008 mL
    assert res.volumes_ml["WT"] == pytest.approx((labels_of(res) > 0).sum() * voxel_ml)
    assert set(res.timings) >= {"preprocess", "predict", "postprocess", "total"}


@pytest.mark.parametrize("role, value, message", [
    ("t2", "GEOMETRY", r"t2: geometry: spacing takes 3 positive numbers \(mm\), origin 3 numbers, direction 9"),
    ("t2", {"spacing": (1.0, -1.0, 1.0)}, "t2: geometry: spacing takes 3 positive"),
    ("t2", {"spacing": (1.0, 1.0)}, "t2: geometry: spacing takes 3 positive"),
    ("t2", {"direction": (1, 0, 0, 0, 1, 0, 0, 0, 0)}, "t2: geometry: .* direction 9 \\(a rotation\\)"),
    ("t2", "nope", r"t2: an \(array, geometry\) pair is expected"),
    ("flair", {"spacing": ("a", 1, 1)}, "flair: geometry: spacing takes 3 positive"),
    ("T2", None, "T2: is not a sequence's role; the roles are t1, t1ce, t2, flair"),
])
def test_array_inputs_with_a_wrong_geometry_or_role_are_one_line_naming_the_role(tiny_bundle, small_case_dir, role,
                                                                                 value, message):
    """Arrays handed in by a script get the CLI's one-line errors, not numpy's or ITK's; a role that is
    not a sequence's (a typo, ``T2``) is refused, where it would leave the T2 out with a warning only."""
    inputs = dict(find_case(small_case_dir).sequences)
    if value is None:  # the file under another name
        inputs[role] = inputs.pop(role.lower())
    else:
        geometry = {"spacing": (1.0, 1.0, 1.0, 1.0)} if value == "GEOMETRY" else value
        inputs[role] = (sitk.GetArrayFromImage(sitk.ReadImage(inputs[role])), geometry)
    with pytest.raises(InputError, match=message):
        segment(inputs, tiny_bundle, "cpu")


def test_tta_and_ensemble_average_probabilities(tiny_bundle, small_case_dir):
    case = find_case(small_case_dir)
    b = bundles.load(tiny_bundle)
    single = segment(case.sequences, b, "cpu")
    ens = segment(case.sequences, [b, b], "cpu")
    assert np.allclose(ens.probabilities, single.probabilities, atol=1e-6)
    tta = segment(case.sequences, b, "cpu", SegmentOptions(tta=True))
    assert tta.probabilities.shape == single.probabilities.shape
    assert not np.allclose(tta.probabilities, single.probabilities)


def test_cancel_stops_within_a_window_and_returns_nothing(tiny_bundle, small_case_dir):
    case = find_case(small_case_dir)
    stop = threading.Event()
    seen = []

    def progress(stage, fraction):
        seen.append((stage, fraction))
        if stage.startswith("predict") and fraction > 0:
            stop.set()

    with pytest.raises(Cancelled):
        segment(case.sequences, tiny_bundle, "cpu", progress=progress, cancel=stop)
    predicted = [f for s, f in seen if s.startswith("predict")]
    assert predicted and max(predicted) < 0.5  # stopped after the first window, of several


def test_cli_segment_writes_labels_report_and_uncertainty(tiny_bundle, phantom_case_dir, tmp_path):
    out = tmp_path / "seg.nrrd"
    r = run_cli("segment", "--case", phantom_case_dir, "-o", str(out), "--model", tiny_bundle,
                "--report", str(tmp_path / "r.json"), "--uncertainty", str(tmp_path / "u.nii.gz"),
                "--label-scheme", "brats2023", "--quiet",
                "--reference-labels", find_case(phantom_case_dir).paths["seg"])
    assert r.returncode == 0, r.stderr
    assert "DEMO" in r.stderr and "WT" in r.stdout
    lab = sitk.ReadImage(str(out))
    assert same_grid(lab, sitk.ReadImage(find_case(phantom_case_dir).paths["t1ce"]))
    assert set(np.unique(sitk.GetArrayFromImage(lab))) <= {0, 1, 2, 3}
    rep = json.load(open(tmp_path / "r.json"))
    assert rep["models"][0]["id"] == "tiny" and rep["device"] == "cpu"
    # the model that ran is named in the report, on stdout and in its note; its loading is timed
    assert rep["model"] == "tiny" and rep["ensembles"] == [] and rep["timings_s"]["load_model"] > 0
    assert r.stdout.strip().endswith("on cpu with tiny") and "note: model tiny is a DEMO" in r.stderr
    assert rep["models"][0]["weights_sha256"] == bundles.read_manifest(tiny_bundle).weights_sha256
    assert rep["braintumorseg_version"] == BrainTumorSegLib.__version__
    assert {"preprocess", "predict", "total"} <= set(rep["timings_s"]) and "WT" in rep["volumes_ml"]
    assert rep["input_geometry"]["size"] == [240, 240, 155]
    # the comparison with expert labels: the same Dice as evaluating the written file (2023 vs 2021 labels)
    from BrainTumorSegLib.evaluation.metrics import case_metrics
    from BrainTumorSegLib.labels import get_scheme
    ref = sitk.GetArrayFromImage(sitk.ReadImage(find_case(phantom_case_dir).paths["seg"]))
    m = case_metrics(sitk.GetArrayFromImage(lab), ref, (1, 1, 1), get_scheme("brats2023"), get_scheme("brats2021"))
    for region in ("WT", "TC", "ET"):
        assert rep["against_reference"][region]["dice"] == pytest.approx(m[region]["dice"])
        assert f"{region} Dice {m[region]['dice']:.3f}" in r.stdout
    assert (tmp_path / "u.nii.gz").exists()


def test_cli_segment_cases_folder(tiny_bundle, small_case_dir, tmp_path):
    r = run_cli("segment", "--cases", os.path.dirname(small_case_dir), "-o", str(tmp_path), "--model", tiny_bundle,
                "--quiet", "--report", "yes")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path)) == ["Small_0000.nii.gz", "Small_0000_qc.png", "Small_0000_report.json",
                                            "batch.log", "index.html", "summary.csv"]  # test_dicom_batch.py
    rep = json.loads((tmp_path / "Small_0000_report.json").read_text())
    assert rep["model"] == "tiny" and 0 < rep["timings_s"]["load_model"] <= rep["timings_s"]["total"]


def test_cli_segment_bad_inputs(tiny_bundle, small_case_dir, tmp_path):
    case = find_case(small_case_dir)
    seq = case.sequences
    out = tmp_path / "o.nii.gz"
    args = ["--model", tiny_bundle, "-o", str(out), "--quiet"]
    one_line_error(cli_main("segment", "--t1", seq["t1"], "--t1ce", seq["t1ce"], "--t2", seq["t2"], *args),
                   "no flair given")
    other_grid = tmp_path / "other_grid_seg.nii.gz"
    sitk.WriteImage(sitk.Image([10, 10, 10], sitk.sitkUInt8) + 1, str(other_grid))
    one_line_error(cli_main("segment", "--case", small_case_dir, *args, "--reference-labels", str(other_grid)),
                   str(other_grid), "not on the grid")
    assert not out.exists()
    far = tmp_path / "far_flair.nii.gz"
    img = sitk.ReadImage(seq["flair"])
    img.SetOrigin((900.0, 900.0, 900.0))
    sitk.WriteImage(img, str(far))
    one_line_error(cli_main("segment", "--t1", seq["t1"], "--t1ce", seq["t1ce"], "--t2", seq["t2"],
                           "--flair", str(far), *args), "far_flair.nii.gz", "does not overlap")
    one_line_error(cli_main("segment", "--case", small_case_dir, "--model", tiny_bundle, "-o",
                           str(tmp_path / "nope" / "o.nii.gz")), "output folder does not exist")
    one_line_error(cli_main("segment", "--case", small_case_dir, "--model", tiny_bundle, "-o", seq["t1"]),
                   "is an input file")
    # a model that wants another sequence set
    m = json.load(open(os.path.join(tiny_bundle, "manifest.json")))
    other = tmp_path / "other"
    net = bundles.load(tiny_bundle).network
    bundles.save(net, other, {**{k: v for k, v in m.items() if k != "weights_sha256"},
                              "in_sequences": ["t1", "t1ce", "t2", "dwi"]})
    one_line_error(cli_main("segment", "--case", small_case_dir, "--model", str(other), "-o", str(out)),
                   "needs t1, t1ce, t2, dwi", "no dwi given")
    one_line_error(cli_main("segment", "--case", small_case_dir, "--model", tiny_bundle, "-o", str(out),
                           "--device", "cuda"), "no CUDA GPU")
    assert not out.exists() and not any(p.name.startswith(".btseg") for p in tmp_path.iterdir())


@pytest.mark.parametrize("sig, code, said", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_cli_interrupt_leaves_no_output(sig, code, said, tiny_bundle, phantom_case_dir, tmp_path):
    """Ctrl-C, or SIGTERM (Slicer's Cancel, a batch system, kill): nothing written, no temporary
    file left (SIGTERM's default ended the process at once, leaving them)."""
    # the tiny network on the 1 mm grid with mirroring: prediction lasts long enough to be interrupted
    fine = _with_spacing(tiny_bundle, tmp_path / "fine", None)
    outdir = tmp_path / "out"
    outdir.mkdir()
    out = outdir / "o.nii.gz"
    # SIGINT back to its default in the child: a shell that starts the tests in the background
    # (no job control) leaves it ignored, and Python then never turns it into KeyboardInterrupt
    p = subprocess.Popen([sys.executable, "-m", "BrainTumorSegLib", "segment", "--case", phantom_case_dir,
                          "--model", fine, "-o", str(out), "--tta", "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, BRAINTUMORSEG_PROGRESS="lines"),
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # interrupt inside prediction, known from the progress lines rather than guessed from a
    # sleep (on a loaded machine imports alone can take longer than any fixed wait)
    for line in p.stdout:
        if line.startswith("progress predict"):
            break
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode == code, err
    assert f"{said}; nothing was written" in err
    assert os.listdir(outdir) == []


def _says_what_it_is(doc: dict) -> None:
    assert doc["demo"] is False and doc["clinical_use"] is False
    assert "not for clinical use" in doc["description"].lower() and "not a medical device" in doc["note"]
    assert len(doc["citations"]) >= 3 and "10.1109/TMI.2014.2377694" in " ".join(doc["citations"])


def _trained_on_every_case_with_its_designs_figures(name: str, design: str) -> "tuple[bundles.Bundle, dict]":
    """A model of the cross-validated design ``design`` trained on all 32 cases: not a demo, not for
    clinical use; its figures are its design's (each case by the fold model that did not train on
    it, pooled), with the postprocessing and window chosen on them; fp16, <= 64 MB."""
    model = bundles.load(name)
    m = model.manifest.to_json()
    assert ensembles.members(name) == [model.path]  # one network, not an ensemble
    assert m["id"] == name and sorted(m["training_data"]["train"]) == sorted(GRADES)
    assert m["all_folds"]["design_folds"] == [f"{design}-fold{k}" for k in range(5)]
    _says_what_it_is(m)
    oof = m["metrics"]["out_of_fold"]
    assert sorted(oof["cases"]) == sorted(GRADES) and oof["by_grade"]["low-grade"]["cases"] == 6
    chosen = m["metrics"]["out_of_fold_postprocessed"]
    assert m["postprocessing"] == max(chosen["postprocessing_search"]["mean_dice"], key=lambda pd: pd[1])[0]
    assert model.manifest.window == m["window"] == chosen["window_search"]["chosen"]
    assert m["weights_storage"] == "float16"
    assert os.path.getsize(os.path.join(model.path, "weights.safetensors")) <= 64 * 2 ** 20
    return model, m


def test_default_model_is_the_real_data_model_and_says_what_it_is():
    """The default: a 2 mm stage 1 with its enhancing tumor refined at 1 mm, trained on all 32 cases,
    stage 1 the weight average of the shipped 2 mm model and that model trained on with cystic cores
    and the TopK cross-entropy (made by ``average``; not shipped), stage 2 trained on that stage 1's
    guides in three rounds (the last from the cascade of the round before); its figures those of its
    design's five fold cascades (not shipped: 21 MB each), taken from their ensemble's protocol,
    which the manifest names."""
    assert bundles.DEFAULT_MODEL == "brats-glioma-cascade-et-v9-all"
    default, m = _trained_on_every_case_with_its_designs_figures(bundles.DEFAULT_MODEL, "brats-glioma-cascade-et-v9")
    assert m["design_figures_from"] == "brats-glioma-ensemble-cascade-et-v9" and m["network"] == "coarse_to_fine"
    assert m["options"]["refine"] == "et" and m["preprocessing"]["spacing_mm"] == 1.0
    assert m["variant"] == "1mm-cascade-et-topk-longer"
    assert m["initialised_from"]["id"] == "brats-glioma-cascade-et-v8-all"
    # stage 1 moved from the shipped 2 mm model it started from, the way an average of two of its fine-tunings does
    stage1 = bundles.load("brats-glioma-v9-all").network.state_dict()
    coarse = default.network.coarse.state_dict()
    moved = [float((coarse[k] - v).norm() / v.norm()) for k, v in stage1.items() if v.is_floating_point() and v.norm() > 0]
    assert max(moved) > 0.001 and sum(moved) / len(moved) < 0.05
    assert default.network.fine.state_dict()["head.weight"].abs().max() > 0  # stage 2 learned (it starts at zero)
    p = subprocess.run([sys.executable, "-m", "BrainTumorSegLib", "models"], capture_output=True, text=True)
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith(bundles.DEFAULT_MODEL + " "))
    mean = m["metrics"]["out_of_fold_postprocessed"]["mean"]
    assert f"DEFAULT; research use, not clinical; Dice WT {mean['dice_WT']:.2f} TC {mean['dice_TC']:.2f}" in line
    assert line.endswith("(32 cases out of fold)")


def test_the_2mm_model_has_the_figures_of_its_shipped_fold_models():
    """``brats-glioma-v9-all`` (the default until the 1 mm refinement; faster): its figures are
    those of its design's five shipped fold models, the same as the five-fold ensemble records."""
    _, m = _trained_on_every_case_with_its_designs_figures("brats-glioma-v9-all", "brats-glioma-v9")
    fold_docs = [bundles.load(f).manifest.to_json() for f in m["all_folds"]["design_folds"]]
    ensemble = ensembles.describe(bundles.resolve("brats-glioma-ensemble-v9"))
    for doc in [ensemble] + fold_docs:
        _says_what_it_is(doc)
    held_out = [c for doc in fold_docs for c in doc["training_data"]["validation"]]
    oof = m["metrics"]["out_of_fold"]
    assert sorted(oof["cases"]) == sorted(held_out) and len(held_out) == len(set(held_out)) == 32
    assert oof["per_case"] == ensemble["metrics"]["out_of_fold"]["per_case"]


def test_the_five_fold_ensemble_stays_shipped_with_its_members():
    members = ensembles.load_models("brats-glioma-ensemble-v9")
    assert [b.id for b in members] == [f"brats-glioma-v9-fold{k}" for k in range(5)]
    ensemble = ensembles.describe(bundles.resolve("brats-glioma-ensemble-v9"))
    assert ensemble["network"] == "ensemble" and set(ensemble["postprocessing"]) == set(NO_POSTPROCESSING)
    for b in members:
        doc = b.manifest.to_json()
        assert not set(doc["training_data"]["train"]) & set(doc["training_data"]["validation"])
        assert set(doc["metrics"]["validation_segment"]["per_case"]) == set(doc["training_data"]["validation"])
    sizes = [os.path.getsize(os.path.join(b.path, "weights.safetensors")) for b in members]
    assert all(b.manifest.document["weights_storage"] == "float16" for b in members) and sum(sizes) <= 64 * 2 ** 20


def test_shipped_demo_model_segments_a_held_out_synthetic_case(tmp_path):
    """The shipped demo model on a phantom of a seed it never saw (training used 1000/2000/3000)."""
    from BrainTumorSegLib.evaluation.scoring import score_against
    from BrainTumorSegLib.synthetic import phantom

    b = bundles.load("brats-synthetic-demo")
    doc = b.manifest.to_json()
    assert b.demo and doc["clinical_use"] is False and "not for clinical use" in doc["description"].lower()
    assert os.path.getsize(os.path.join(b.path, "weights.safetensors")) < 25 * 2 ** 20
    folder = phantom.generate(tmp_path, 1, seed=5000)[0]
    case = find_case(folder)
    res = segment(case.sequences, b, "cpu")
    m = score_against(res.labels, case.paths["seg"], res.label_scheme)
    assert m["WT"]["dice"] >= 0.8, m


def _with_spacing(bundle_dir, folder, spacing):
    """The same network saved with a declared working spacing (as the real-data recipe exports)."""
    b = bundles.load(bundle_dir)
    m = dict(b.manifest.to_json(), id=f"tiny-{spacing}mm", preprocessing={"spacing_mm": spacing})
    m.pop("weights_sha256")
    return bundles.save(b.network, folder, m)


def test_model_working_spacing_is_used_and_labels_return_on_the_reference_grid(tiny_bundle, phantom_case_dir, tmp_path):
    case = find_case(phantom_case_dir)
    coarse = bundles.load(_with_spacing(tiny_bundle, tmp_path / "coarse", 3.0))
    res = segment(case.sequences, coarse, "cpu", SegmentOptions(uncertainty=True))
    ref = sitk.ReadImage(case.paths["t1ce"])
    assert same_grid(res.labels, ref) and same_grid(res.uncertainty, ref)
    # the network ran on the 3 mm working grid
    coarse_pre = preprocess(case.sequences, PreprocessOptions(isotropic=3.0))
    assert res.probabilities.shape[1:] == coarse_pre.data.shape[1:]
    labels = labels_of(res)
    assert set(np.unique(labels)) <= {0, 1, 2, 4}
    # probabilities interpolated onto the 1 mm grid keep the tumor's volume (27 voxels per coarse voxel)
    coarse_labels = probabilities_to_labels(res.probabilities, "sigmoid", "brats2021")
    coarse_wt = ((coarse_labels > 0) & coarse_pre.brain).sum() * 27
    assert coarse_wt > 1000 and abs((labels > 0).sum() - coarse_wt) < 0.1 * coarse_wt
    # and nothing (beyond the coarse brain mask's edge) outside the brain
    outside = sitk.GetArrayFromImage(ref) == 0
    assert (labels[outside] > 0).sum() < 0.02 * (labels > 0).sum()


def test_ensemble_of_models_at_different_spacings_is_refused(tiny_bundle, phantom_case_dir, tmp_path):
    case = find_case(phantom_case_dir)
    coarse = _with_spacing(tiny_bundle, tmp_path / "coarse", 3.0)  # the tiny bundle works at 2 mm
    with pytest.raises(InputError, match="one spacing"):
        segment(case.sequences, [tiny_bundle, coarse], "cpu")


def test_glibc_malloc_tuning_leaves_labels_unchanged(tiny_bundle, small_case_dir, tmp_path):
    """The CLI keeps large activations on the heap (allocator.tune_glibc_malloc); the labels are
    byte-identical to a run with glibc's defaults."""
    from BrainTumorSegLib.predict.allocator import ENV_SWITCH, tune_glibc_malloc

    outs = {}
    for switch in ("0", "1"):
        outs[switch] = tmp_path / f"labels_{switch}.nii.gz"
        r = subprocess.run([sys.executable, "-m", "BrainTumorSegLib", "segment", "--case", small_case_dir,
                            "--model", tiny_bundle, "-o", str(outs[switch]), "--quiet"],
                           capture_output=True, text=True, timeout=600, env={**os.environ, ENV_SWITCH: switch})
        assert r.returncode == 0, r.stderr
    a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(outs[s]))) for s in ("0", "1"))
    assert (a > 0).any() and np.array_equal(a, b)
    if sys.platform.startswith("linux"):
        import platform
        assert tune_glibc_malloc() == (platform.libc_ver()[0] == "glibc")


def test_segment_runs_the_cascade_as_the_network_predicts_it(small_case_dir, tmp_path):
    """The DM-DA cascade through segment(): stage 1 narrows the windows to its box, and the
    probabilities inside it are those of DMDACascade.predict (the path the network tests check)."""
    torch.manual_seed(0)
    net = build("dmda_unet", cube=32, margin=2, channels_2d=[4, 8, 16, 32], channels_3d=[4, 8, 16, 32]).eval()
    with torch.no_grad():  # stage 1 sees tumor in a small block only
        net.stage1.head.weight.zero_()
        net.stage1.head.bias.copy_(torch.tensor([50.0, 0.0, 0.0, 0.0]))
    case = find_case(small_case_dir)
    data = torch.from_numpy(preprocess(case.sequences).data)
    block = (slice(20, 30), slice(30, 40), slice(25, 35))

    def locate(volume, slice_batch=16):
        mask = torch.zeros(volume.shape[1:], dtype=torch.bool)
        mask[block] = True
        return mask

    net.locate = locate  # a stand-in for a trained stage 1 that found this block
    folder = bundles.save(net, tmp_path / "cascade", {"id": "cascade", "network": "dmda_unet", "label_scheme": "brats2021",
                                                      "options": {"cube": 32, "margin": 2, "channels_2d": [4, 8, 16, 32],
                                                                  "channels_3d": [4, 8, 16, 32]}, "patch_size": [32, 32, 32],
                                                      "preprocessing": {"spacing_mm": 2.0}})  # the small case's own grid
    loaded = bundles.load(folder)
    loaded.network.locate = locate
    res = segment(case.sequences, loaded, "cpu", SegmentOptions(**NO_POSTPROCESSING, precision="fp32"))
    expected = net.predict(data)
    box = tuple(slice(a, b) for a, b in expected["region"])
    assert expected["found_by_stage1"] and all(b.stop - b.start == 32 for b in box)
    probs = torch.from_numpy(res.probabilities)
    assert torch.allclose(probs[(slice(None),) + box], torch.sigmoid(expected["logits"][(slice(None),) + box]), atol=1e-5)
    outside = torch.ones(probs.shape[1:], dtype=torch.bool)
    outside[box] = False
    assert (probs[:, outside] == 0).all()


def _perturbed(bundle_dir, folder):
    """The same network with its weights moved a little (another member for an ensemble)."""
    b = bundles.load(bundle_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in b.network.parameters():
            p.add_(0.2 * p.std().nan_to_num() * torch.randn_like(p))
    m = dict(b.manifest.to_json(), id="tiny-moved")
    m.pop("weights_sha256")
    return bundles.save(b.network, folder, m)


def test_an_ensemble_folder_is_one_model_by_path_or_name(tiny_bundle, phantom_case_dir, tmp_path):
    """An ensemble written by ``braintumorseg ensemble`` segments as the list of its members does,
    by path and by name, is listed as one model, and still works when its folder moves with its
    members (a member beside it is named, not pinned by path)."""
    case = find_case(phantom_case_dir)
    models = tmp_path / "models"
    models.mkdir()
    first = str(models / "tiny")
    bundles.save(bundles.load(tiny_bundle).network, first, {k: v for k, v in bundles.read_manifest(
        tiny_bundle).to_json().items() if k != "weights_sha256"})
    second = _perturbed(first, models / "tiny-moved")
    r = cli_main("ensemble", first, second, "--out", str(models / "both"), "--description", "two tiny nets")
    assert r.returncode == 0, r.stderr
    doc = json.loads((models / "both" / "manifest.json").read_text())
    assert doc["format"] == bundles.ENSEMBLE_FORMAT and doc["description"] == "two tiny nets"
    assert doc["members"] == [{"name": n, "weights_sha256": bundles.read_manifest(models / n).weights_sha256}
                              for n in ("tiny", "tiny-moved")]
    os.rename(models, tmp_path / "moved")
    ens = str(tmp_path / "moved" / "both")
    assert [b.id for b in ensembles.load_models(ens)] == ["tiny", "tiny-moved"]
    listed = segment(case.sequences, [str(tmp_path / "moved" / "tiny"), str(tmp_path / "moved" / "tiny-moved")], "cpu")
    alone = segment(case.sequences, str(tmp_path / "moved" / "tiny"), "cpu")
    by_path = segment(case.sequences, ens, "cpu")
    np.testing.assert_array_equal(by_path.probabilities, listed.probabilities)
    assert not np.allclose(by_path.probabilities, alone.probabilities)  # the second member counts
    assert [m["id"] for m in by_path.report()["models"]] == ["tiny", "tiny-moved"]
    assert by_path.report()["ensembles"] == [{"id": "both", "path": ens}] and listed.report()["ensembles"] == []
    env = dict(os.environ, BRAINTUMORSEG_MODELS=str(tmp_path / "moved"))
    out = tmp_path / "labels.nii.gz"
    p = subprocess.run([sys.executable, "-m", "BrainTumorSegLib", "segment", "--case", phantom_case_dir, "--model",
                        "both", "-o", str(out), "--quiet", "--report", str(tmp_path / "r.json")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    # through the command line too, the ensemble is named: report, stdout, the note
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["ensembles"] == [{"id": "both", "path": os.path.join(str(tmp_path / "moved"), "both")}]
    assert rep["model"] == "both" and [m["id"] for m in rep["models"]] == ["tiny", "tiny-moved"]
    assert rep["timings_s"]["load_model"] > 0
    assert p.stdout.strip().endswith("with both (tiny + tiny-moved)")
    assert "note: model both (ensemble of tiny, tiny-moved) is a DEMO" in p.stderr
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))),
                                  sitk.GetArrayFromImage(by_path.labels))
    p = subprocess.run([sys.executable, "-m", "BrainTumorSegLib", "models"], capture_output=True, text=True, env=env)
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("both "))
    assert "ensemble" in line and "BROKEN" not in line


def test_models_and_compare_show_the_same_held_out_table(tiny_bundle, tmp_path):
    """A manifest with a held-out fold of its own and its design's pooled out-of-fold cases: ``models``
    quotes, and ``compare`` resamples, the same one of the two (the out-of-fold table, best first)."""
    def table(dice: float, cases: List[str]) -> Dict:
        row = {r: {"dice": dice} for r in ("WT", "TC", "ET")}
        return {"cases": cases, "per_case": {c: row for c in cases},
                "mean": {f"dice_{r}": dice for r in ("WT", "TC", "ET")}}
    doc = {k: v for k, v in bundles.read_manifest(tiny_bundle).to_json().items() if k != "weights_sha256"}
    doc["metrics"] = {"validation_segment": table(0.5, ["a", "b"]),
                      "out_of_fold_postprocessed": table(0.8, ["a", "b", "c"])}
    models = tmp_path / "models"
    models.mkdir()
    bundles.save(bundles.load(tiny_bundle).network, str(models / "both-tables"), doc)
    assert ensembles.held_out_key(doc) == "out_of_fold_postprocessed"
    env = dict(os.environ, BRAINTUMORSEG_MODELS=str(models))
    p = subprocess.run([sys.executable, "-m", "BrainTumorSegLib", "models"], capture_output=True, text=True, env=env)
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("both-tables "))
    assert line.endswith("Dice WT 0.80 TC 0.80 ET 0.80 (3 cases out of fold)"), line
    p = subprocess.run([sys.executable, "-m", "BrainTumorSegLib", "compare", "both-tables", "--json",
                        str(tmp_path / "c.json")], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "c.json").read_text())["cases"] == ["a", "b", "c"]


def test_ensembles_that_cannot_work_are_one_line_errors(tiny_bundle, phantom_case_dir, tmp_path):
    coarse = _with_spacing(tiny_bundle, tmp_path / "coarse", 3.0)
    one_line_error(cli_main("ensemble", str(tiny_bundle), coarse, "--out", str(tmp_path / "e1")),
                   "cannot be averaged", "spacing_mm")
    one_line_error(cli_main("ensemble", str(tiny_bundle), "--out", str(tmp_path / "e2")), "two or more models, not 1")
    assert not os.path.exists(tmp_path / "e1") and not os.path.exists(tmp_path / "e2")
    ens = ensembles.save_ensemble(tmp_path / "ens", [str(tiny_bundle), _perturbed(tiny_bundle, tmp_path / "moved")])
    # fine-tuning (or anything that needs one network) names the members to choose from
    one_line_error(cli_main("finetune", "--from", ens, "--data", phantom_case_dir, "--out", str(tmp_path / "ft")),
                   "is an ensemble of", "name one of its members")
    one_line_error(cli_main("ensemble", ens, str(tiny_bundle), "--out", str(tmp_path / "e3")), "is an ensemble")
    # a member replaced by other weights: the ensemble's recorded figures no longer describe it
    replaced = tmp_path / "moved"
    os.rename(replaced, tmp_path / "old")
    _perturbed(tmp_path / "old", replaced)
    one_line_error(cli_main("segment", "--case", phantom_case_dir, "--model", ens, "-o", str(tmp_path / "x.nii.gz")),
                   "ens/manifest.json", "member moved", "other weights")
    os.rename(replaced, tmp_path / "gone")
    one_line_error(cli_main("segment", "--case", phantom_case_dir, "--model", ens, "-o", str(tmp_path / "x.nii.gz")),
                   "ens/manifest.json", "member moved", "no such model")
    assert not os.path.exists(tmp_path / "x.nii.gz")


def test_an_ensemble_declares_its_own_postprocessing(tiny_bundle, phantom_case_dir, tmp_path):
    """An ensemble's own postprocessing (chosen on its members' held-out cases) is what segment
    applies, as if given as options; without one, its first member's; a malformed one is one line."""
    case = find_case(phantom_case_dir)
    members = [str(tiny_bundle), _perturbed(tiny_bundle, tmp_path / "moved")]
    own = {"min_et_voxels": 0, "min_component_voxels": 5000, "fill_core_holes": True}
    ens = ensembles.save_ensemble(tmp_path / "ens", members, {"postprocessing": own})
    assert ensembles.load_ensemble(ens).postprocessing == own
    assert ensembles.load_ensemble(members).postprocessing == bundles.read_manifest(tiny_bundle).postprocessing
    by_ensemble = segment(case.sequences, ens, "cpu")
    as_options = segment(case.sequences, members, "cpu", SegmentOptions(min_component_voxels=5000, fill_core_holes=True))
    plain = segment(case.sequences, members, "cpu", SegmentOptions(**NO_POSTPROCESSING))
    labels = [sitk.GetArrayFromImage(r.labels) for r in (by_ensemble, as_options, plain)]
    np.testing.assert_array_equal(labels[0], labels[1])
    assert not np.array_equal(labels[0], labels[2])  # the setting did something on this case
    bad = ensembles.save_ensemble(tmp_path / "bad", members, {"postprocessing": {"min_tumour": 3}})
    one_line_error(cli_main("segment", "--case", phantom_case_dir, "--model", bad, "-o", str(tmp_path / "x.nii.gz")),
                   "bad/manifest.json", "field postprocessing", "min_et_voxels")
    assert not os.path.exists(tmp_path / "x.nii.gz")


def _with_patch(bundle_dir, folder, patch, **fields):
    """The same network saved with another training patch (and other manifest fields)."""
    b = bundles.load(bundle_dir)
    m = dict(b.manifest.to_json(), id="tiny-patch", patch_size=list(patch), **fields)
    m.pop("weights_sha256")
    return bundles.save(b.network, folder, m)


def test_the_whole_volume_in_one_pass(tiny_bundle, phantom_case_dir, tmp_path):
    """``window whole``: the network runs once over the whole working volume (what its own forward
    gives on it), not in windows of its patch; a model may declare it as its default (an ensemble
    for itself), the option overrides that, and a malformed declaration is one line."""
    case = find_case(phantom_case_dir)
    small = _with_patch(tiny_bundle, tmp_path / "small", (32, 32, 32))
    fp32 = dict(precision="fp32", **NO_POSTPROCESSING)
    patch = segment(case.sequences, small, "cpu", SegmentOptions(window="patch", **fp32))
    whole = segment(case.sequences, small, "cpu", SegmentOptions(window="whole", **fp32))
    assert patch.input_geometry["windows"] > 1 and patch.input_geometry["window"] == "patch"
    assert (whole.input_geometry["window"], whole.input_geometry["windows"]) == ("whole", 1)
    pre = preprocess(case.sequences, PreprocessOptions(isotropic=2.0))
    net = bundles.load(small).network.eval()
    with torch.inference_mode():
        direct = torch.sigmoid(net(torch.from_numpy(pre.data)[None])[0]).numpy()
    np.testing.assert_allclose(whole.probabilities, direct, atol=1e-5)
    assert not np.allclose(patch.probabilities, direct, atol=1e-3)  # windows see other context
    # declared by the model, or by an ensemble for itself; the option wins
    declared = _with_patch(tiny_bundle, tmp_path / "declared", (32, 32, 32), window="whole")
    assert segment(case.sequences, declared, "cpu").input_geometry["window"] == "whole"
    assert segment(case.sequences, declared, "cpu", SegmentOptions(window="patch")).input_geometry["window"] == "patch"
    pair = [small, _perturbed(small, tmp_path / "moved")]
    ens = ensembles.save_ensemble(tmp_path / "ens", pair, {"window": "whole"})
    assert ensembles.load_ensemble(ens).window == "whole" and ensembles.load_ensemble(small).window == "patch"
    assert segment(case.sequences, ens, "cpu").input_geometry["window"] == "whole"
    bad = ensembles.save_ensemble(tmp_path / "bad", pair, {"window": "all"})
    one_line_error(cli_main("segment", "--case", phantom_case_dir, "--model", bad, "-o", str(tmp_path / "x.nii.gz")),
                   "bad/manifest.json", "field window", "patch or whole")
    b = bundles.load(small)
    with pytest.raises(InputError, match="field window"):
        bundles.Manifest.from_json(dict(b.manifest.to_json(), window="everything"))
    assert not os.path.exists(tmp_path / "x.nii.gz")


def test_labels_made_near_the_tumor_equal_those_of_the_whole_grid(tiny_bundle, phantom_case_dir):
    """From a coarser working grid, labels are made only around the tumor (fast); asking for the
    uncertainty map takes every probability back to the whole reference grid instead. The labels
    must be the same voxel for voxel, with clean-up steps on that look at components and holes."""
    case = find_case(phantom_case_dir)
    post = dict(min_component_voxels=200, fill_core_holes=True, min_et_voxels=50)
    near = segment(case.sequences, tiny_bundle, "cpu", SegmentOptions(**post))
    whole = segment(case.sequences, tiny_bundle, "cpu", SegmentOptions(uncertainty=True, **post))
    a, b = labels_of(near), labels_of(whole)
    assert a.shape == sitk.ReadImage(case.paths["t1ce"]).GetSize()[::-1] and same_grid(near.labels, whole.labels)
    assert 0 < (a > 0).sum() < a.size // 2  # a tumor, and much of the grid outside the region
    np.testing.assert_array_equal(a, b)


def test_a_tumor_without_enhancement_is_flagged_with_the_models_held_out_figures(tiny_bundle, small_case_dir, tmp_path):
    """Little or no enhancing tumor in the labels: a warning in the report naming the pattern and
    quoting the model's own held-out cases (from its manifest); none where the tumor enhances."""
    b = bundles.load(tiny_bundle)
    with torch.no_grad():
        b.network.head.bias[b.manifest.output.channels - 1] -= 100.0  # the last channel is ET in either kind
    held = {c: {r: {"dice": d, "volume_ref_ml": v, "volume_error_ml": 0.0} for r, d, v in
                (("WT", 0.7, 90.0), ("TC", 0.4, 30.0), ("ET", 1.0, et))} for c, et in (("lgg", 0.0), ("gbm", 20.0))}
    m = dict(b.manifest.to_json(), id="tiny-no-et", metrics={"validation_segment": {"per_case": held}})
    m.pop("weights_sha256")
    no_et = bundles.save(b.network, tmp_path / "no-et", m)
    case = find_case(small_case_dir)
    res = segment(case.sequences, no_et, "cpu")
    assert res.volumes_ml["WT"] > 1.0 and res.volumes_ml["ET"] == 0.0
    flagged = [w for w in res.warnings if w.startswith("little or no enhancing tumor (ET 0.0 mL")]
    assert len(flagged) == 1 and "tiny-no-et on held-out cases, 1 like this: Dice WT 0.70, TC 0.40" in flagged[0]
    assert res.report()["warnings"] == res.warnings
    # a model trained on every case (--fold all): the figures are its design's fold models', and it says so
    m = dict(m, id="tiny-all", all_folds={"design_folds": ["tiny-fold0", "tiny-fold1"]})
    every = segment(case.sequences, bundles.save(b.network, tmp_path / "all", m), "cpu")
    assert any("tiny-all (its design's fold models) on held-out cases, 1 like this" in w for w in every.warnings)
    # two models listed: no figures describe their average, the pattern is still named
    both = segment(case.sequences, [no_et, no_et], "cpu")
    assert [w for w in both.warnings if w.startswith("little or no enhancing")] and \
        not any("held-out" in w for w in both.warnings)
    plain = segment(case.sequences, tiny_bundle, "cpu")
    assert plain.volumes_ml["ET"] >= 0.02 * plain.volumes_ml["WT"] > 0
    assert not any(w.startswith("little or no enhancing") for w in plain.warnings)
