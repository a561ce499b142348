import logging

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import analytic_image, make_image, rotation_direction

from BrainTumorSegLib.errors import InputError
from BrainTumorSegLib.preprocess.grid import labels_to_working, overlap_fraction, resample_to
from BrainTumorSegLib.preprocess.registration import register_rigid
from BrainTumorSegLib.preprocess.transform import PreprocessOptions, preprocess
from BrainTumorSegLib.read.images import same_grid

ORIENTATIONS = ["LPS", "RAS", "RAI", "LPI", "PIR", "SAL", "ILP", "ASR"]


def blob_case(shape=(24, 28, 32), spacing=(1.0, 1.0, 1.0), direction=None, seed=0):
    """Four 'sequences' with an ellipsoid brain on a zero background, plus a label map."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    brain = (z / 0.8) ** 2 + (y / 0.75) ** 2 + (x / 0.7) ** 2 < 1
    imgs = {}
    for k, role in enumerate(("t1", "t1ce", "t2", "flair")):
        arr = np.where(brain, 100 + 30 * k + 20 * x + 10 * rng.random(shape), 0).astype(np.float32)
        imgs[role] = make_image(arr, spacing, (5.0, -7.0, 11.0), direction)
    lab = np.zeros(shape, np.uint8)
    lab[(x - 0.2) ** 2 + y ** 2 + z ** 2 < 0.2] = 2
    lab[(x - 0.2) ** 2 + y ** 2 + z ** 2 < 0.05] = 4
    lab[(x - 0.25) ** 2 + (y - 0.1) ** 2 + z ** 2 < 0.01] = 1
    return imgs, make_image(lab, spacing, (5.0, -7.0, 11.0), direction)


@pytest.mark.parametrize("code", ORIENTATIONS)
def test_same_content_in_any_orientation_gives_same_network_input(code):
    imgs, lab = blob_case()
    base = preprocess(imgs)
    reoriented = {r: sitk.DICOMOrient(im, code) for r, im in imgs.items()}
    p = preprocess(reoriented)
    assert np.array_equal(p.data, base.data)
    # and the way back lands on the reoriented input's own grid, matching its labels exactly
    lab_r = sitk.DICOMOrient(lab, code)
    work = labels_to_working(lab_r, p.inverse)
    back = p.inverse.to_reference(work)
    assert same_grid(back, reoriented["t1ce"])
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(lab_r))


@pytest.mark.parametrize("angle", [0.0, 17.0, 44.0, 120.0])
def test_round_trip_exact_on_oblique_grids(angle):
    imgs, lab = blob_case(spacing=(0.9, 1.1, 2.5), direction=rotation_direction(angle, axis=1))
    p = preprocess(imgs)
    back = p.inverse.to_reference(labels_to_working(lab, p.inverse))
    assert same_grid(back, imgs["t1ce"])
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(lab))


def test_crop_and_zscore_over_brain():
    imgs, _ = blob_case()
    p = preprocess(imgs, PreprocessOptions(crop_margin=2))
    brain_full = sitk.GetArrayFromImage(imgs["t1"]) != 0
    idx = np.argwhere(brain_full)
    expected = tuple(min(n, int(b) + 3) - max(0, int(a) - 2)
                     for a, b, n in zip(idx.min(0), idx.max(0), brain_full.shape))
    assert p.data.shape == (4,) + expected
    assert p.brain.sum() == brain_full.sum()
    for c in p.data:
        assert abs(c[p.brain].mean()) < 1e-4 and abs(c[p.brain].std() - 1) < 1e-3
        assert not c[~p.brain].any()
    # pasting back restores the full working grid
    assert p.inverse.uncrop(p.brain.astype(np.uint8)).sum() == brain_full.sum()


def test_sequences_on_other_grids_are_resampled_in_physical_space():
    """Clinical-like input: 1 mm T1ce, thick-slice FLAIR on another matrix and origin."""
    def f(pts):
        return 100 + pts[:, 0] + 0.5 * pts[:, 1] - 0.25 * pts[:, 2]  # linear: exact under linear interpolation

    ref = analytic_image((40, 40, 30), (1, 1, 1), (0, 0, 0), None, f)
    thick = analytic_image((50, 50, 8), (0.9, 0.9, 5.0), (-4.0, -3.0, -5.0), rotation_direction(0), f)
    p = preprocess({"t1": ref, "t1ce": ref, "t2": ref, "flair": thick},
                   PreprocessOptions(normalize=False, crop_margin=0))
    assert p.data.shape[1:] == (30, 40, 40)
    assert np.allclose(p.data[3], p.data[1], atol=1e-3)


def test_non_overlapping_fields_of_view_are_an_error(tmp_path):
    imgs, _ = blob_case()
    far = sitk.Image(imgs["flair"])
    far.SetOrigin((500.0, 500.0, 500.0))
    path = str(tmp_path / "other_patient_flair.nii.gz")
    sitk.WriteImage(far, path)
    with pytest.raises(InputError, match=r"other_patient_flair\.nii\.gz: does not overlap the field of view"):
        preprocess({**imgs, "flair": path})
    assert overlap_fraction(imgs["t1"], far) == 0.0


def test_files_read_side_by_side_give_the_first_bad_file_s_error_and_the_same_volumes(tmp_path):
    imgs, _ = blob_case()
    paths = {}
    for role, img in imgs.items():
        paths[role] = str(tmp_path / f"{role}.nii.gz")
        sitk.WriteImage(img, paths[role])
    from_files, from_images = preprocess(paths), preprocess(imgs)
    assert np.array_equal(from_files.data, from_images.data)
    assert from_files.decisions["register"] == from_images.decisions["register"]
    for role in ("t2", "flair"):  # both bad: the error is the one a plain loop over the roles meets first
        data = open(paths[role], "rb").read()
        open(paths[role], "wb").write(data[: len(data) // 2])
    for _ in range(3):
        with pytest.raises(InputError, match=r"t2\.nii\.gz: is truncated"):
            preprocess(paths)


def test_missing_sequence_is_named():
    imgs, _ = blob_case()
    del imgs["flair"]  # T1 and T2 may be left out (test_missing_sequences.py); the FLAIR may not
    with pytest.raises(InputError, match="no flair sequence given .*t1 and t2 may be left out"):
        preprocess(imgs)


def test_a_label_map_given_as_a_sequence_is_warned_of():
    """A seg file picked for the FLAIR segments without an error (its values are finite, its grid
    right), but the result is nonsense: the warning names the file and the role."""
    imgs, lab = blob_case()
    assert not [w for w in preprocess(imgs).warnings if "label map" in w]
    p = preprocess({**imgs, "flair": sitk.Cast(lab, sitk.sitkFloat32)})
    assert [w for w in p.warnings if "label map" in w] == [
        "flair: holds only the values 0, 1, 2, 4, as a label map or mask does, not an MRI: is it the right file for flair?"]


def test_isotropic_resampling_and_back():
    imgs, lab = blob_case(shape=(12, 40, 40), spacing=(0.8, 0.8, 3.0))
    p = preprocess(imgs, PreprocessOptions(isotropic=1.0))
    assert np.allclose(p.spacing, (1.0, 1.0, 1.0))
    assert p.inverse.working_shape == (36, 32, 32)
    work = labels_to_working(lab, p.inverse)
    back = p.inverse.to_reference(work)
    assert same_grid(back, imgs["t1ce"])
    # nearest-neighbour there and back: labels agree except at boundaries of the thick slices
    agree = (sitk.GetArrayFromImage(back) == sitk.GetArrayFromImage(lab)).mean()
    assert agree > 0.97


def test_warns_when_not_skull_stripped(caplog):
    imgs, _ = blob_case()
    noisy = sitk.GetArrayFromImage(imgs["t2"]) + 5.0  # no zero background: skull and noise present
    imgs["t2"] = make_image(noisy.astype(np.float32), imgs["t2"].GetSpacing(), imgs["t2"].GetOrigin())
    with caplog.at_level(logging.WARNING):
        p = preprocess(imgs)
    assert any("t2: does not look skull-stripped" in w for w in p.warnings)
    assert "skull-stripped" not in caplog.text  # returned to the caller, who says it once
    assert not any("skull" in w for w in preprocess(blob_case()[0]).warnings)


def test_rigid_registration_recovers_a_shift():
    def f(pts):
        c = pts - np.array([32.0, 30.0, 28.0])
        return np.where((c ** 2 / np.array([400.0, 250.0, 180.0])).sum(1) < 1,
                        200 + 2 * pts[:, 0] - pts[:, 2], 0.0)

    fixed = analytic_image((64, 60, 56), (1, 1, 1), (0, 0, 0), None, f)
    moved = analytic_image((64, 60, 56), (1, 1, 1), (0, 0, 0), None,
                           lambda pts: f(pts - np.array([4.0, -3.0, 2.0])))
    tx = register_rigid(fixed, moved)
    aligned = resample_to(moved, fixed, tx)
    a, b = sitk.GetArrayFromImage(aligned), sitk.GetArrayFromImage(fixed)
    naive = np.abs(sitk.GetArrayFromImage(moved) - b).mean()
    assert np.abs(a - b).mean() < 0.25 * naive


def test_labels_on_a_coarser_working_grid_keep_thin_structures():
    """Thin label sheets on a 1 mm grid survive on a 2 mm working grid (area-weighted vote) with
    their volume; ties go to the lower label value."""
    from BrainTumorSegLib.preprocess.grid import labels_to_working

    arr = np.zeros((40, 40, 40), np.float32)
    arr[10:30, 10:30, 10:30] = 100
    seg = np.zeros((40, 40, 40), np.uint8)
    seg[12:28, 12:28, 12:28] = 2
    seg[12:28, 12:28, 19:22] = 4   # a three-voxel slab: one 2 mm voxel whole, half of another
    seg[15:25, 15:25, 15:17] = 1
    imgs = {r: make_image(arr) for r in ("t1", "t1ce", "t2", "flair")}
    p = preprocess(imgs, PreprocessOptions(isotropic=2.0, crop_margin=0))
    out = labels_to_working(make_image(seg), p.inverse)
    assert out.shape == p.data.shape[1:]
    assert set(np.unique(out)) == {0, 1, 2, 4}
    # volumes agree with the 1 mm map within a 2 mm voxel layer's worth
    for v in (1, 2, 4):
        assert abs((out == v).sum() * 8 - (seg == v).sum()) <= 0.5 * (seg == v).sum(), v
    # the half-covered 2 mm voxels are a tie between ET and edema: the lower value, edema, takes them
    et_columns = np.unique(np.nonzero(out == 4)[2])
    assert len(et_columns) == 1
