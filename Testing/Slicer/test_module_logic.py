"""The Slicer module's logic on real MRML nodes."""
import glob
import json
import os
import tempfile
import time

import numpy as np
import pytest
import slicer
import vtk
from conftest import lib_python, run_lib
from vtk.util import numpy_support

from BrainTumorSegModuleLib import jobs, results
from BrainTumorSegModuleLib.errors import ModuleError
from BrainTumorSegModuleLib.logic import BrainTumorSegLogic
from BrainTumorSegModuleLib.models import finetune_source, model_note, model_tooltip, models, models_in
from BrainTumorSegModuleLib.mrml import ijk_to_ras, voxels
from BrainTumorSegModuleLib.parameters import (
    CHOICES,
    MODULE_OPTIONS,
    NOT_CLINICAL,
    from_spin_box,
    spin_box_range,
    to_spin_box,
)
from BrainTumorSegModuleLib.results import SEGMENTS
from BrainTumorSegModuleLib.roles import assign, role_of

ROLES = ("t1", "t1ce", "t2", "flair")


def load(scene, path, name=None, label=False):
    node = slicer.vtkMRMLLabelMapVolumeNode() if label else slicer.vtkMRMLScalarVolumeNode()
    scene.AddNode(node)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(path)
    assert storage.ReadData(node)
    node.SetName(name or os.path.basename(path).split(".")[0])
    return node


@pytest.fixture
def scene_with_case(case_dir):
    scene = slicer.vtkMRMLScene()
    nodes = {r: load(scene, glob.glob(os.path.join(case_dir, f"*_{r}.nii.gz"))[0]) for r in ROLES}
    return scene, nodes


@pytest.fixture
def logic(scene_with_case):
    return BrainTumorSegLogic(scene_with_case[0], python=lib_python())


def exported_labels(seg, reference):
    """The segmentation as a label map on the reference grid: 1, 2, 3 in the order of SEGMENTS."""
    scratch = slicer.vtkMRMLScene()
    lab = slicer.vtkMRMLLabelMapVolumeNode()
    scratch.AddNode(lab)
    ids = vtk.vtkStringArray()
    for key, *_ in SEGMENTS:
        ids.InsertNextValue(key)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
        seg, ids, lab, reference, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
    return voxels(lab)


def seg_file(case_dir):
    return glob.glob(os.path.join(case_dir, "*_seg.nii.gz"))[0]


class FinishedJob:
    """A background job that has already ended (the logic's ``BackgroundJob`` protocol)."""

    def __init__(self, code=0, error=""):
        self.stage, self.fraction, self.cancelled = "done", 1.0, False
        self.stdout, self.stderr = [], []
        self.code, self.error = code, error

    def poll(self):
        return self.code

    def cancel(self):
        self.cancelled = True


def finished_segment(labels=None, code=0, error=""):
    """A job starter whose ``segment`` ends at once: ``labels`` (a label map node) written where
    ``-o`` says, and a report; with ``code`` other than 0 it fails with ``error`` instead."""
    def start(args):
        if code == 0:
            storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
            storage.SetFileName(args[args.index("-o") + 1])
            assert storage.WriteData(labels)
            with open(args[args.index("--report") + 1], "w") as f:
                json.dump({"label_scheme": "brats2021", "volumes_ml": {"WT": 12.5}, "device": "nowhere",
                           "model": "injected"}, f)
        return FinishedJob(code, error)
    return start


def test_segment_gives_named_segments_on_the_t1ce_grid_identical_to_the_cli(scene_with_case, logic, case_dir, tmp_path):
    scene, nodes = scene_with_case
    before = scene.GetNumberOfNodes()
    seen = []
    res = logic.segmentation.segment(nodes, device="cpu", progress=lambda s, f: seen.append(s))
    seg = res.segmentation
    segmentation = seg.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())] == \
        ["Necrotic tumor core", "Peritumoral edema", "Enhancing tumor"]
    for key, _title, colour, term in SEGMENTS:
        s = segmentation.GetSegment(key)
        assert np.allclose(s.GetColor(), colour)
        assert s.GetTerminology() == term
    assert seg.GetNodeReference(seg.GetReferenceImageGeometryReferenceRole()) is nodes["t1ce"]
    ours = exported_labels(seg, nodes["t1ce"])
    # the same case through the command line, on the original NIfTI files
    out = str(tmp_path / "cli.nii.gz")
    run_lib("segment", "--case", case_dir, "-o", out, "--device", "cpu", "--quiet")
    cli_node = load(slicer.vtkMRMLScene(), out, label=True)
    assert np.allclose(ijk_to_ras(cli_node), ijk_to_ras(nodes["t1ce"]), atol=1e-4)
    cli = voxels(cli_node)
    expected = np.select([cli == 1, cli == 2, cli == 4], [1, 2, 3], 0)
    assert ours.shape == expected.shape and (expected > 0).sum() > 1000
    assert np.array_equal(ours, expected)
    # volumes table, status, progress stages, nothing else added
    table = res.table
    assert table.GetNumberOfRows() == 5 and table.GetColumnName(1) == "Volume (mL)"
    wt = float(table.GetCellText(4, 1))
    assert wt == pytest.approx((expected > 0).sum() * np.prod(nodes["t1ce"].GetSpacing()) / 1000, rel=0.01)
    assert "cpu" in res.status() and res.uncertainty is None
    # progress goes through each network of the default (one network; an ensemble's: each member)
    n = len(models()[0].get("members") or [None])
    assert "preprocess" in seen and {f"predict {k}/{n}" for k in range(1, n + 1)} <= set(seen), sorted(set(seen))
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1
    assert scene.GetNumberOfNodes() > before


def test_uncertainty_volume_when_asked(scene_with_case, logic):
    scene, nodes = scene_with_case
    res = logic.segmentation.segment(nodes, device="cpu", uncertainty=True, name="with uncertainty")
    u = voxels(res.uncertainty)
    assert res.uncertainty.GetName() == "with uncertainty uncertainty"
    assert u.shape == voxels(nodes["t1ce"]).shape and 0 <= u.min() and u.max() <= 1 and u.max() > 0


def test_brain_mask_when_asked_and_clinical_handling_switch(scene_with_case, logic):
    """A BraTS-like case needs no skull stripping; the brain mask comes into the scene on the T1ce
    grid; with clinical handling off the library is told to treat the volumes as preprocessed."""
    scene, nodes = scene_with_case
    assert logic.inputs.needs_skull_stripping(nodes) is False
    res = logic.segmentation.segment(nodes, device="cpu", brain_mask=True, name="masked")
    mask = voxels(res.brain_mask)
    assert res.brain_mask.GetName() == "masked brain mask" and res.brain_mask.IsA("vtkMRMLLabelMapVolumeNode")
    assert mask.shape == voxels(nodes["t1ce"]).shape
    brain = np.any([voxels(nodes[r]) != 0 for r in ROLES], axis=0)  # a stripped input: its own nonzero brain,
    dice = 2 * ((mask > 0) & brain).sum() / ((mask > 0).sum() + brain.sum())  # via the model's 2 mm grid
    assert dice > 0.95
    assert res.report["preprocessing"]["skull_strip"]["stripped"] is False
    run = logic.segmentation.start(nodes, device="cpu", clinical=False)
    try:
        cmd = " ".join(run.job.command)
        assert "--skull-strip never" in cmd and "--register never" in cmd and "--isotropic off" in cmd
    finally:
        logic.segmentation.cancel(run)
    # a head (noise everywhere, no zero background) needs stripping
    head = slicer.vtkMRMLScalarVolumeNode()
    scene.AddNode(head)
    head.CopyOrientation(nodes["t2"])
    noisy = voxels(nodes["t2"]).astype(np.float32) + 5.0
    img = vtk.vtkImageData()
    img.SetDimensions(*noisy.shape[::-1])
    img.GetPointData().SetScalars(numpy_support.numpy_to_vtk(noisy.ravel(), deep=True))
    head.SetAndObserveImageData(img)
    assert logic.inputs.needs_skull_stripping(dict(nodes, t2=head)) is True


def test_choices_are_kept_in_the_scene_parameter_node(scene_with_case, logic):
    scene, nodes = scene_with_case
    choices, volumes, output = logic.parameters.load()
    assert choices["device"] == "auto" and choices["clinical"] is True and output is None  # defaults
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "previous")
    logic.parameters.save({"model": "brats-synthetic-demo", "tta": True, "min_et_voxels": 50, "clinical": False},
                       nodes, seg)
    # a second logic on the same scene (the module re-entered, or the scene reloaded) reads them back
    again = BrainTumorSegLogic(scene, python=lib_python())
    choices, volumes, output = again.parameters.load()
    assert choices["model"] == "brats-synthetic-demo" and choices["tta"] is True and choices["min_et_voxels"] == 50
    assert choices["clinical"] is False and choices["device"] == "auto"
    assert all(volumes[r] is nodes[r] for r in ROLES) and output is seg
    assert scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode") == 1
    with pytest.raises(ModuleError, match="unknown choice"):
        logic.parameters.save({"colour": "red"}, nodes)


def test_the_module_s_options_are_the_library_s_declaration(scene_with_case, logic):
    """Defaults, spin box range and command line come from ``segment_options``; a bad value is one
    line before any file is written; the command the module builds reads back, through the
    library's own parser, as the options it was given."""
    from BrainTumorSegLib.cli.main import build_parser
    from BrainTumorSegLib.segment_options import SegmentOptions, defaults, specs

    scene, nodes = scene_with_case
    assert {k: CHOICES[k] for k in MODULE_OPTIONS} == {k: defaults()[k] for k in MODULE_OPTIONS}
    spec = specs()["min_et_voxels"]
    assert spin_box_range("min_et_voxels") == (spec.low - 1, spec.high)  # the value below: the model's own
    for value in (None, 0, 50, int(spec.high)):
        assert from_spin_box("min_et_voxels", to_spin_box("min_et_voxels", value)) == value
    workdirs = set(glob.glob(os.path.join(tempfile.gettempdir(), "BrainTumorSeg-*")))
    with pytest.raises(ModuleError, match=r"^--overlap: 1\.0 is not allowed; use a number from 0 to 0\.9$"):
        logic.segmentation.start(nodes, device="cpu", overlap=1.0)
    with pytest.raises(ModuleError, match="--min-et-voxels: -5 is not allowed"):
        logic.segmentation.start(nodes, min_et_voxels=-5)
    with pytest.raises(ModuleError, match="unknown option 'colour'"):
        logic.segmentation.start(nodes, colour="red")
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "BrainTumorSeg-*"))) == workdirs
    given = {"device": "cpu", "tta": True, "min_et_voxels": 50, "uncertainty": True, "overlap": 0.25}
    run = logic.segmentation.start(nodes, clinical=False, **given)
    try:
        command = run.job.command
        args = build_parser().parse_args(command[command.index("BrainTumorSegLib") + 1:])
    finally:
        logic.segmentation.cancel(run)
    assert SegmentOptions.from_args(args) == SegmentOptions(**given, **NOT_CLINICAL)
    assert args.uncertainty == os.path.join(run.workdir, "uncertainty.nrrd") and args.brain_mask is None


def test_output_segmentation_is_overwritten_in_one_step(scene_with_case, logic):
    scene, nodes = scene_with_case
    first = logic.segmentation.segment(nodes, device="cpu").segmentation
    first.GetSegmentation().AddEmptySegment("old", "an old segment")
    count = scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    res = logic.segmentation.segment(nodes, device="cpu", output=first)
    assert res.segmentation is first and scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == count
    segmentation = first.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())] == \
        ["Necrotic tumor core", "Peritumoral edema", "Enhancing tumor"]
    fresh = logic.segmentation.segment(nodes, device="cpu").segmentation
    assert np.array_equal(exported_labels(first, nodes["t1ce"]), exported_labels(fresh, nodes["t1ce"]))
    # an output removed from the scene meanwhile: one line, the scene unchanged
    gone = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "gone")
    run = logic.segmentation.start(nodes, device="cpu", output=gone)
    scene.RemoveNode(gone)
    before = scene.GetNumberOfNodes()
    while run.poll() is None:
        time.sleep(0.1)
    with pytest.raises(ModuleError, match="no longer in the scene"):
        logic.segmentation.finish(run)
    assert scene.GetNumberOfNodes() == before


def test_volume_roles_from_names():
    brats21 = [f"BraTS2021_00495_{r}" for r in ("flair", "t1", "t1ce", "t2")]
    idx, notes = assign(brats21)
    assert {r: brats21[i] for r, i in idx.items()} == {r: f"BraTS2021_00495_{r}" for r in ROLES} and not notes
    brats23 = [f"BraTS-GLI-00005-000-{s}.nii.gz" for s in ("t2f", "t1c", "t2w", "t1n")]
    idx, _ = assign(brats23)
    assert [brats23[idx[r]][-10:-7] for r in ROLES] == ["t1n", "t1c", "t2w", "t2f"]
    for name, role in (("T2 FLAIR", "flair"), ("T1 post contrast", "t1ce"), ("T1_Gd", "t1ce"), ("ax T2", "t2"),
                       ("MRHead", None), ("T1 and T2", None), ("t1c", "t1ce"), ("T1W_SE", "t1")):
        assert role_of(name) == role, name
    idx, notes = assign(["T1 axial", "T1 sagittal", "T2", "FLAIR", "T1ce"])
    assert idx["t1"] is None and idx["t2"] == 2 and idx["t1ce"] == 4
    assert any("T1: several volumes fit (T1 axial, T1 sagittal)" in n for n in notes)


def test_assign_volumes_on_scene_nodes(scene_with_case, logic):
    scene, nodes = scene_with_case
    chosen, notes = logic.inputs.assign_volumes()
    assert chosen == nodes and not notes


def test_save_as_training_case_round_trip(scene_with_case, logic, case_dir, tmp_path):
    scene, nodes = scene_with_case
    res = logic.segmentation.segment(nodes, device="cpu")
    seg = res.segmentation
    # an edit, as in the Segment Editor: a block of edema added away from the tumor
    labels = exported_labels(seg, nodes["t1ce"])
    edema = labels == 2
    edema[20:30, 40:50, 40:50] = True
    results.set_segment_mask(seg, "ED", edema.astype(np.uint8), nodes["t1ce"])
    expected = exported_labels(seg, nodes["t1ce"])
    assert (expected == 2).sum() >= (labels == 2).sum() + 1000 - (labels[20:30, 40:50, 40:50] > 0).sum()
    assert (expected[20:30, 40:50, 40:50] > 0).all()
    for scheme, names, values in (("brats2021", ("_t1", "_t1ce", "_t2", "_flair", "_seg"), (1, 2, 4)),
                                  ("brats2023", ("-t1n", "-t1c", "-t2w", "-t2f", "-seg"), (1, 2, 3))):
        folder = tmp_path / scheme
        folder.mkdir()
        nodes_before = scene.GetNumberOfNodes()
        path = logic.training.save_case(nodes, seg, str(folder), "Edited_001", scheme)
        assert scene.GetNumberOfNodes() == nodes_before  # no stray colour table or label map in the user's scene
        assert sorted(os.listdir(path)) == sorted(f"Edited_001{n}.nii.gz" for n in names)
        assert os.listdir(folder) == ["Edited_001"]  # no temporary folder left behind
        back = load(slicer.vtkMRMLScene(), os.path.join(path, f"Edited_001{names[4]}.nii.gz"), label=True)
        assert np.allclose(ijk_to_ras(back), ijk_to_ras(nodes["t1ce"]), atol=1e-4)
        got = voxels(back)
        assert np.array_equal(got, np.select([expected == 1, expected == 2, expected == 3], values, 0))
        t1 = load(slicer.vtkMRMLScene(), os.path.join(path, f"Edited_001{names[0]}.nii.gz"))
        assert np.array_equal(voxels(t1), voxels(nodes["t1"]))
        with pytest.raises(ModuleError, match="exists already"):
            logic.training.save_case(nodes, seg, str(folder), "Edited_001", scheme)
    # the saved case is a valid training case for the library
    run_lib("evaluate", "--pred", os.path.join(tmp_path / "brats2021", "Edited_001", "Edited_001_seg.nii.gz"),
            "--ref", glob.glob(os.path.join(case_dir, "*_seg.nii.gz"))[0], "--csv", str(tmp_path / "e.csv"),
            "--json", str(tmp_path / "e.json"))


def test_seg_nrrd_keeps_segment_names(scene_with_case, logic, tmp_path):
    scene, nodes = scene_with_case
    seg = logic.segmentation.segment(nodes, device="cpu").segmentation
    path = str(tmp_path / "tumor.seg.nrrd")
    st = slicer.vtkMRMLSegmentationStorageNode()
    st.SetFileName(path)
    assert st.WriteData(seg)
    other = slicer.vtkMRMLScene()
    back = slicer.vtkMRMLSegmentationNode()
    other.AddNode(back)
    st2 = slicer.vtkMRMLSegmentationStorageNode()
    st2.SetFileName(path)
    assert st2.ReadData(back)
    s = back.GetSegmentation()
    assert [s.GetNthSegment(i).GetName() for i in range(s.GetNumberOfSegments())] == [t for _, t, _, _ in SEGMENTS]
    assert np.array_equal(exported_labels(back, nodes["t1ce"]), exported_labels(seg, nodes["t1ce"]))


def test_cancel_leaves_the_scene_as_it_was(scene_with_case, logic):
    scene, nodes = scene_with_case
    before = scene.GetNumberOfNodes()
    run = logic.segmentation.start(nodes, device="cpu")
    assert run.poll() is None
    logic.segmentation.cancel(run)
    assert run.job.proc.returncode is not None and run.job.cancelled
    assert not os.path.exists(run.workdir)
    with pytest.raises(ModuleError, match="cancelled"):
        logic.segmentation.finish(run)
    assert scene.GetNumberOfNodes() == before
    with pytest.raises(ModuleError, match="cancelled"):
        logic.segmentation.segment(nodes, device="cpu", should_cancel=lambda: True)
    assert scene.GetNumberOfNodes() == before


def test_errors_are_one_line_and_leave_no_half_made_node(scene_with_case, logic, case_dir, monkeypatch):
    scene, nodes = scene_with_case
    before = scene.GetNumberOfNodes()
    with pytest.raises(ModuleError, match="choose a volume for FLAIR"):
        logic.segmentation.segment(dict(nodes, flair=None), device="cpu")
    with pytest.raises(ModuleError, match="same volume"):
        logic.segmentation.segment(dict(nodes, t2=nodes["t1"]), device="cpu")
    far = nodes["flair"]
    far.SetOrigin(far.GetOrigin()[0] + 900, far.GetOrigin()[1], far.GetOrigin()[2])
    with pytest.raises(ModuleError) as err:
        logic.segmentation.segment(nodes, device="cpu")
    assert "overlap" in str(err.value) and "\n" not in str(err.value)
    # the volume named as the user knows it, not as the temporary file the command read
    assert f"{far.GetName()} (FLAIR)" in str(err.value) and "BrainTumorSeg-" not in str(err.value), str(err.value)
    far.SetOrigin(far.GetOrigin()[0] - 900, far.GetOrigin()[1], far.GetOrigin()[2])
    with pytest.raises(ModuleError, match="CUDA"):
        logic.segmentation.segment(nodes, device="cuda")
    assert scene.GetNumberOfNodes() == before

    def broken(*a, **k):  # a failure while the result is being added
        raise RuntimeError("disk full")

    monkeypatch.setattr(results, "fill_volume_table", broken)
    injected = BrainTumorSegLogic(scene, start_job=finished_segment(load(slicer.vtkMRMLScene(), seg_file(case_dir), label=True)))
    with pytest.raises(ModuleError) as err:  # one line for the user, not a traceback
        injected.segmentation.segment(nodes)
    assert str(err.value) == "the result could not be added to the scene (RuntimeError: disk full)"
    assert scene.GetNumberOfNodes() == before


def test_finetune_on_saved_cases_registers_a_model(scene_with_case, logic, tmp_path, monkeypatch):
    scene, nodes = scene_with_case
    seg = logic.segmentation.segment(nodes, device="cpu").segmentation
    data = tmp_path / "saved"
    data.mkdir()
    logic.training.save_case(nodes, seg, str(data), "Corrected_001")
    models_dir = tmp_path / "models"
    monkeypatch.setenv("BRAINTUMORSEG_MODELS", str(models_dir))
    job = logic.training.start_finetune("brats-synthetic-demo", str(data), str(tmp_path / "run"), epochs=1, iters=2,
                                        device="cpu", extra=["--batch", "1", "--patch", "32", "32", "32"])
    assert job.wait(900) == 0, job.stderr
    assert job.fraction == 1.0 and job.stage == "training"
    path = logic.training.finish_finetune(job, str(tmp_path / "run"), name="hospital-a")
    assert path == str(models_dir / "hospital-a")
    listed = {m["name"]: m for m in models()}
    assert listed["hospital-a"]["finetuned_from"]["id"] == "brats-synthetic-demo"
    # a folder loaded by hand and remembered: listed again while it exists, skipped once it is gone
    by_hand = models_in([path, str(tmp_path / "deleted-model")])
    assert [m["name"] for m in by_hand] == ["hospital-a"] and by_hand[0]["path"] == path
    assert "Label scheme: brats2021" in model_tooltip(by_hand[0])
    with pytest.raises(ModuleError, match="no-such-model"):
        logic.training.start_finetune("no-such-model", str(data), str(tmp_path / "run2"), epochs=1, iters=1)


def test_the_default_is_listed_first_and_says_its_figures_are_its_designs():
    listed = models()
    default = listed[0]  # the default, selected first: a cascade trained on all 32 cases
    assert default["name"] == "brats-glioma-cascade-et-v9-all" and "error" not in default
    tip = model_tooltip(default)
    assert "network: coarse_to_fine" in tip and "Out of fold (32 held-out cases)" in tip
    assert finetune_source(default["path"]) == default["path"]  # fine-tuning starts from the default itself
    note = model_note(default)
    assert "Cross-validated on 32 cases, each segmented by a network trained as this one was but without that " \
        "case's fold (with its postprocessing, chosen on these same cases): Dice 0.86" in note
    assert "low-grade (6 cases)" in note and "In 1 of 3 cases without enhancing tumor" in note


def test_the_five_fold_ensemble_is_listed_as_one_model_and_fine_tunes_from_its_first_member():
    ensemble = {m["name"]: m for m in models()}["brats-glioma-ensemble-v9"]
    assert "error" not in ensemble
    tip = model_tooltip(ensemble)
    assert "ensemble of brats-glioma-v9-fold0, brats-glioma-v9-fold1" in tip and "Out of fold (32 held-out cases)" in tip
    assert [m["name"] for m in models_in([ensemble["path"]])] == ["brats-glioma-ensemble-v9"]
    assert os.path.basename(finetune_source(ensemble["path"])) == "brats-glioma-v9-fold0"
    note = model_note(ensemble)
    assert "Cross-validated on 32 cases, each segmented by the member that did not train on it (with its " \
        "postprocessing, chosen on these same cases): Dice 0.85" in note
    # and what to expect with a sequence left out, as the module allows for T1 and T2
    missing = ensemble["metrics"]["out_of_fold_postprocessed"]["missing_sequences"]
    expected = "; ".join(f"{name.replace('no ', 'with ')} left out: Dice " + ", ".join(
        f"{missing[name]['mean'][f'dice_{r}']:.2f}" for r in ("WT", "TC", "ET")) for name in ("no T1", "no T2"))
    assert f" W{expected[1:]}." in note and "With T1 left out: Dice 0.84, 0.76, 0.65" in note
    assert "left out" not in model_note({"id": "x", "metrics": {"validation_segment": {
        "cases": ["a"], "mean": {"dice_WT": 1, "dice_TC": 1, "dice_ET": 1}, "missing_sequences": {"no T1": []}}}})
    assert finetune_source("brats-synthetic-demo").endswith("brats-synthetic-demo")


def test_library_is_found_from_the_module_folder():
    assert os.path.exists(os.path.join(jobs.library_root(), "BrainTumorSegLib", "pipeline.py"))


def test_device_query_lists_the_cpu(logic):
    job = logic.start_device_query()
    job.wait(120)
    devices, description = logic.devices_from(job)
    assert devices[0] == "cpu" and "torch" in description


def test_dependency_list_matches_pyproject():
    import re

    from conftest import ROOT

    from BrainTumorSegModuleLib import dependencies

    text = open(os.path.join(ROOT, "pyproject.toml")).read()
    deps = re.search(r"dependencies = \[(.*?)\]", text, re.S).group(1)
    declared = set(re.findall(r'"([^"]+)"', deps))
    ours = {req for _, req in dependencies.PIP_PACKAGES}
    skipped = set(dependencies.SHIPPED_BY_SLICER + dependencies.FROM_PYTORCH_EXTENSION)
    assert ours == {d for d in declared if re.split(r"[<>=]", d)[0] not in skipped}
    for extra, packages in dependencies.EXTRA_PACKAGES.items():
        listed = re.search(rf"^{extra} = \[(.*?)\]", text, re.M).group(1)
        assert {req for _, req in packages} == set(re.findall(r'"([^"]+)"', listed)), extra
    assert f"torch>={dependencies.TORCH_AT_LEAST}" in declared


def test_a_torch_older_than_the_library_needs_counts_as_missing(monkeypatch):
    from importlib import metadata

    from BrainTumorSegModuleLib import dependencies

    monkeypatch.setattr(dependencies.importlib.util, "find_spec", lambda name: object())
    for version, missing in (("1.13.1", True), ("2.0.1+cu118", True), ("2.1.0", False), ("2.13.0+cpu", False),
                             ("2.10.0rc1", False), ("10.0", False)):
        monkeypatch.setattr(metadata, "version", lambda name, v=version: v)
        assert dependencies.torch_missing() is missing, version


def test_terminology_on_slicer_before_5_10_goes_through_the_tag():
    """Slicer 5.6 and 5.8 have no vtkSegment.SetTerminology: the same entry goes into the
    TerminologyEntry tag, which is where those versions (and GetTerminology later) read it."""
    from BrainTumorSegModuleLib.results import set_terminology

    real = slicer.vtkSegment()

    class SegmentOfSlicer58:  # the methods a 5.8 vtkSegment has, and no SetTerminology
        def SetTag(self, tag, value):
            real.SetTag(tag, value)

    def tag(segment):
        value = vtk.reference("")
        assert segment.GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), value)
        return str(value)

    entry = SEGMENTS[2][3]
    set_terminology(SegmentOfSlicer58(), entry)
    assert tag(real) == entry
    assert real.GetTerminology() == entry  # what Slicer 5.10+ (and this slicer-core) reads back
    assert entry.startswith("Segmentation category and type - DICOM master list~")
    modern = slicer.vtkSegment()
    set_terminology(modern, entry)
    assert tag(modern) == entry


def test_model_tooltip_never_fails_on_hand_written_manifests():
    full = {"id": "m", "description": "A model.", "label_scheme": "brats2023", "network": "resunet",
            "metrics": {"validation_segment": {"cases": ["a", "b"], "mean": {
                "dice_WT": 0.9, "dice_TC": 0.8, "dice_ET": 0.7, "hd95_WT": 5.0}}}}
    assert "Validation (2 held-out cases): Dice WT 0.90, TC 0.80, ET 0.70; HD95 WT 5.0 mm" in model_tooltip(full)
    for odd in ({"id": "x"}, {"metrics": []}, {"metrics": {"validation_segment": {"mean": {"dice_WT": 0.9}}}},
                {"metrics": {"validation_segment": "n/a"}}, {"error": "lacks weights_sha256"},
                {"members": [{"name": "a"}, 5, {}]}, {"members": "a, b"}):
        text = model_tooltip(odd)
        assert "Validation" not in text and text


def test_a_case_without_t2_is_segmented_from_the_volumes_given(scene_with_case, logic, tmp_path):
    """T1 and T2 may be left out (the library leaves their channel empty); T1ce and FLAIR may not.
    Only the volumes given are written and named on the command line; such a case segments into
    the usual three segments, but is no training case (training needs all four)."""
    scene, nodes = scene_with_case
    before = scene.GetNumberOfNodes()
    with pytest.raises(ModuleError, match="^choose a volume for T1ce, FLAIR$"):
        logic.segmentation.start(dict(nodes, t1ce=None, flair=None), device="cpu")
    with pytest.raises(ModuleError, match="^the same volume is chosen for two sequences$"):
        logic.segmentation.start(dict(nodes, t2=None, t1=nodes["flair"]), device="cpu")
    run = logic.segmentation.start(dict(nodes, t2=None), device="cpu", name="no T2")
    command = run.job.command
    assert "--t2" not in command and all(f"--{r}" in command for r in ("t1", "t1ce", "flair"))
    assert not os.path.exists(os.path.join(run.workdir, "t2.nrrd"))
    assert set(run.volumes) == {"t1", "t1ce", "flair"}
    while run.poll() is None:
        time.sleep(0.1)
    res = logic.segmentation.finish(run)
    assert res.report["preprocessing"]["sequences_missing"] == ["t2"]
    assert res.segmentation.GetSegmentation().GetNumberOfSegments() == 3
    labels = exported_labels(res.segmentation, nodes["t1ce"])
    assert labels.shape == voxels(nodes["t1ce"]).shape and (labels > 0).sum() > 1000
    first, *warned = res.status().split("\n")
    assert first.endswith(" (without T2)") and any(w.startswith("Warning: no t2 given") for w in warned)
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1 and scene.GetNumberOfNodes() > before
    with pytest.raises(ModuleError, match="^a training case needs all four sequences; it has no T2$"):
        logic.training.save_case(res.volumes, res.segmentation, str(tmp_path), "NoT2_001")
    assert os.listdir(tmp_path) == []


def test_an_injected_job_s_result_goes_into_the_scene_all_or_nothing(scene_with_case, case_dir):
    """The segmentation job is behind a protocol: a job that ends at once gives the scene exactly
    the labels it wrote; one on another grid, or one that failed, leaves the scene as it was."""
    scene, nodes = scene_with_case
    truth = load(slicer.vtkMRMLScene(), seg_file(case_dir), label=True)
    logic = BrainTumorSegLogic(scene, start_job=finished_segment(truth))
    run = logic.segmentation.start(nodes, name="injected")
    res = logic.segmentation.finish(run)
    expected = np.select([voxels(truth) == v for v in (1, 2, 4)], [1, 2, 3], 0)
    assert np.array_equal(exported_labels(res.segmentation, nodes["t1ce"]), expected)
    assert res.segmentation.GetName() == "injected" and res.table.GetCellText(0, 0).startswith("Whole tumor")
    assert res.status().startswith("Segmented in ") and res.status().endswith(" s on nowhere with injected")
    assert not os.path.exists(run.workdir)
    shifted = load(slicer.vtkMRMLScene(), seg_file(case_dir), label=True)
    shifted.SetOrigin(shifted.GetOrigin()[0] + 5, *shifted.GetOrigin()[1:])
    for starter, message in ((finished_segment(shifted), "^the result is not on the T1ce grid$"),
                             (finished_segment(code=1, error="CUDA out of memory"), "^CUDA out of memory$")):
        count = scene.GetNumberOfNodes()
        injected = BrainTumorSegLogic(scene, start_job=starter)
        run = injected.segmentation.start(nodes)
        with pytest.raises(ModuleError, match=message):
            injected.segmentation.finish(run)
        assert scene.GetNumberOfNodes() == count and not os.path.exists(run.workdir)


def test_the_result_sits_in_the_t1ce_s_study_and_exports_as_an_automatic_segmentation(scene_with_case, case_dir):
    """What Slicer's DICOM SEG export and Segment Editor read: the segmentation (and every node the
    run adds) under the T1ce's study, each segment AUTOMATIC by the model, its name and colour kept
    when a terminology is chosen; the uncertainty map displayed and never guessed to be a T1ce."""
    scene, nodes = scene_with_case
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), "patient"), "study")
    for node in nodes.values():  # as Slicer's DICOM loader files a series' volume
        sh.CreateItem(study, node)
    truth = load(slicer.vtkMRMLScene(), seg_file(case_dir), label=True)
    starter = finished_segment(truth)

    def with_uncertainty(args):
        job = starter(args)
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(args[args.index("--uncertainty") + 1])
        assert storage.WriteData(nodes["t1ce"])  # any volume on the grid will do
        return job

    res = BrainTumorSegLogic(scene, start_job=with_uncertainty).segmentation.segment(nodes, uncertainty=True)
    for node in (res.segmentation, res.table, res.uncertainty):
        assert sh.GetItemParent(sh.GetItemByDataNode(node)) == study, node.GetName()
    segmentation = res.segmentation.GetSegmentation()
    for key, *_ in SEGMENTS:
        segment, tag = segmentation.GetSegment(key), vtk.mutable("")
        assert not segment.GetNameAutoGenerated() and not segment.GetColorAutoGenerated()
        assert segment.GetTag("DICOM.SegmentAlgorithmType", tag) and str(tag) == "AUTOMATIC"
        assert segment.GetTag("DICOM.SegmentAlgorithmName", tag) and str(tag) == "injected"
    assert res.uncertainty.GetDisplayNode() is not None
    assert "t1ce" in res.uncertainty.GetName()
    chosen, _ = BrainTumorSegLogic(scene).inputs.assign_volumes()
    assert chosen == nodes  # the uncertainty map, named after the T1ce, is not taken for one
    # an output segmentation under a transform would be filled in the wrong place: refused
    moved = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "moved")
    moved.SetAndObserveTransformNodeID(scene.AddNewNodeByClass("vtkMRMLLinearTransformNode").GetID())
    with pytest.raises(ModuleError, match="^moved [(]the output segmentation[)] is under a transform"):
        BrainTumorSegLogic(scene, start_job=starter).segmentation.start(nodes, output=moved)


def test_the_last_result_works_again_after_the_scene_is_saved_and_loaded(scene_with_case, case_dir, tmp_path):
    """Edit and Save act on a result: after the scene is saved and loaded again (or the module
    reloaded) the segmentation node says which run's volumes, label scheme and model it came from."""
    scene, nodes = scene_with_case
    logic = BrainTumorSegLogic(scene, start_job=finished_segment(load(slicer.vtkMRMLScene(), seg_file(case_dir),
                                                                      label=True)))
    res = logic.segmentation.segment(dict(nodes, t2=None), name="kept")
    logic.parameters.remember_result(res.segmentation)
    scene.SetURL(str(tmp_path / "scene.mrml"))
    scene.Commit()  # the MRML file alone: node references and attributes, as Slicer saves them
    loaded = slicer.vtkMRMLScene()
    loaded.SetURL(str(tmp_path / "scene.mrml"))
    loaded.Import()
    again = BrainTumorSegLogic(loaded)
    kept = again.segmentation.recorded(again.parameters.last_result())
    assert kept is not None and kept.segmentation.GetName() == "kept"
    assert {r: n.GetName() for r, n in kept.volumes.items()} == {r: nodes[r].GetName() for r in ("t1", "t1ce", "flair")}
    assert kept.report["label_scheme"] == "brats2021" and kept.report["model"] == "injected"
    assert kept.table.GetName() == res.table.GetName() and kept.gone() is None
    assert again.segmentation.recorded(loaded.AddNewNodeByClass("vtkMRMLSegmentationNode")) is None  # not ours
    loaded.RemoveNode(kept.volumes["flair"])  # deleted since: gone, not "made without FLAIR"
    assert again.segmentation.recorded(kept.segmentation).gone() == \
        "the result's FLAIR is no longer in the scene; segment again"
    loaded.RemoveNode(kept.volumes["t1ce"])
    assert kept.gone() == "the result's T1ce is no longer in the scene; segment again"
    assert again.segmentation.recorded(kept.segmentation) is None


def grade_figures_of(cases):
    """``validation.by_grade`` as the library makes it, for made-up figures on real case ids."""
    from BrainTumorSegLib.evaluation.cross_validation import grade_summary

    def region(dice, ref_ml=10.0, error_ml=1.0):
        return {"dice": dice, "hd95": 3.0, "volume_error_ml": error_ml, "volume_ref_ml": ref_ml}

    per_case = {c: {"WT": region(wt), "TC": region(tc), "ET": region(et, et_ref, et_err)}
                for c, (wt, tc, et, et_ref, et_err) in cases.items()}
    return grade_summary(per_case)


def test_the_model_note_comes_from_the_chosen_model_s_manifest():
    """The note under the model list: the model's own note, its held-out figures, per grade where
    its manifest has them (as the library's grade_summary writes them), and saying so where not."""
    listed = {m["name"]: m for m in models()}
    # a shipped fold model (the five-fold ensemble's first member): its own held-out fold, per grade
    first = listed["brats-glioma-ensemble-v9"]["members"][0]["name"]
    fold = listed[first]
    held_out = fold["metrics"]["validation_segment"]
    note = model_note(fold)
    assert note.startswith(f"{first}: Research model (one cross-validation fold) trained on real BraTS 2018 and 2021")
    mean, hgg = held_out["mean"], held_out["by_grade"]["HGG"]
    assert (f"On {len(held_out['cases'])} cases held out from its training: Dice {mean['dice_WT']:.2f} (whole tumor), "
            f"{mean['dice_TC']:.2f} (tumor core), {mean['dice_ET']:.2f} (enhancing tumor).") in note
    assert f"high-grade ({hgg['cases']} cases): Dice {hgg['dice_WT']:.2f}, {hgg['dice_TC']:.2f}" in note
    assert "It averages" not in note and "not a medical device" in note
    ungraded = {"id": "ungraded", "metrics": {"validation_segment": {
        "cases": ["a", "b"], "mean": {"dice_WT": 0.9, "dice_TC": 0.8, "dice_ET": 0.7}}}}
    note = model_note(ungraded)
    assert "no figures per tumor grade: how it does on low-grade gliomas is not known" in note
    assert "Figures from so few cases are rough." in note
    by_grade = grade_figures_of({"Brats18_CBICA_AQO_1": (0.9, 0.8, 0.7, 10.0, 1.0),
                                 "Brats18_TCIA01_231_1": (0.8, 0.6, 0.5, 10.0, 1.0),
                                 "Brats18_TCIA10_628_1": (0.7, 0.5, 0.0, 2.0, -2.0),     # LGG
                                 "BraTS2021_01477": (0.6, 0.4, 0.0, 0.0, 0.5)})          # no enhancing tumor
    graded = {"id": "graded", "description": "a fold.", "metrics": {"validation_segment": {
        "cases": ["a", "b", "c", "d"], "mean": {"dice_WT": 0.75, "dice_TC": 0.575, "dice_ET": 0.3}, "by_grade": by_grade}}}
    note = model_note(graded)
    assert note.startswith("graded: A fold. On 4 cases held out from its training: Dice 0.75 (whole tumor), 0.57")
    assert "By grade: high-grade (2 cases): Dice 0.85, 0.70, 0.60; low-grade (2 cases): Dice 0.65, 0.45, 0.00." in note
    assert "In 1 of 1 case without enhancing tumor, some was predicted anyway." in note
    assert "per tumor grade" not in note and "It averages" not in note
    folds = {"id": "folds", "description": "folds.", "members": [{"name": "f0"}, {"name": "f1"}],
             "metrics": {"out_of_fold": graded["metrics"]["validation_segment"]}}
    note = model_note(folds)
    assert "Cross-validated on 4 cases, each segmented by the member that did not train on it: Dice 0.75" in note
    assert "By grade: high-grade (2 cases)" in note and "It averages f0 and f1" in note
    # both a held-out fold of its own and its design's pooled folds: the same table `models` and `compare` use
    both = {"id": "both", "description": "both.", "metrics": {"validation_segment": ungraded["metrics"]["validation_segment"],
                                                              "out_of_fold_postprocessed": folds["metrics"]["out_of_fold"]}}
    note = model_note(both)
    assert "Cross-validated on 4 cases" in note and "(with its postprocessing, chosen on these same cases)" in note
    demo = model_note(listed["brats-synthetic-demo"])
    assert "A demo: it has no figures on real scans." in demo and "held out" not in demo
    assert model_note({"name": "broken", "error": "lacks weights_sha256"}) == "broken cannot be used: lacks weights_sha256"
    for odd in ({"id": "x"}, {"metrics": []}, {"metrics": {"validation_segment": {"mean": {"dice_WT": 0.9}}}},
                {"metrics": {"validation_segment": {"cases": ["a"], "mean": {"dice_WT": 1, "dice_TC": 1, "dice_ET": 1},
                                                    "by_grade": {"HGG": {"cases": True}, "without_et": []}}}},
                {"metrics": {"validation_segment": "n/a"}}, {"members": [{"name": "a"}, 5, {}]}, {"members": "a, b"}):
        text = model_note(odd)
        assert "By grade" not in text and "no model here is a medical device" in text, odd


def test_pip_installs_are_pinned_to_the_packages_slicer_ships():
    from importlib import metadata

    from BrainTumorSegModuleLib.installation import slicer_constraints_file

    path = slicer_constraints_file()
    try:
        pins = open(path).read().split()
    finally:
        os.remove(path)
    assert f"numpy=={metadata.version('numpy')}" in pins and f"SimpleITK=={metadata.version('SimpleITK')}" in pins
