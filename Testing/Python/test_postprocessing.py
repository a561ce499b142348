import numpy as np

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
