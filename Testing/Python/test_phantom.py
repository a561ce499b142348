import filecmp
import os

import numpy as np
import SimpleITK as sitk
from conftest import cli_main

from BrainTumorSegLib.read.cases import find_cases
from BrainTumorSegLib.synthetic.phantom import BRATS_SIZE


def arr(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(path))


def test_phantom_cli_writes_brats_layout_and_is_reproducible(tmp_path):
    r1 = cli_main("phantom", str(tmp_path / "a"), "--n", "2", "--seed", "3")
    assert r1.returncode == 0, r1.stderr
    assert "wrote 2 synthetic cases" in r1.stdout
    r2 = cli_main("phantom", str(tmp_path / "b"), "--n", "1", "--seed", "3", "--quiet")
    assert r2.returncode == 0, r2.stderr
    cases = find_cases(tmp_path / "a")
    assert [c.case_id for c in cases] == ["Synth_3_0000", "Synth_3_0001"]
    assert all(not c.missing(("t1", "t1ce", "t2", "flair", "seg")) for c in cases)
    # same seed, same files, byte for byte; a smaller --n is a prefix of a larger one
    same, diff, _ = filecmp.cmpfiles(tmp_path / "a" / "Synth_3_0000", tmp_path / "b" / "Synth_3_0000",
                                     os.listdir(tmp_path / "b" / "Synth_3_0000"), shallow=False)
    assert len(same) == 5 and not diff
    other = cli_main("phantom", str(tmp_path / "c"), "--n", "1", "--seed", "4", "--quiet")
    assert other.returncode == 0
    s3 = arr(cases[0].paths["seg"])
    s4 = arr(str(tmp_path / "c" / "Synth_4_0000" / "Synth_4_0000_seg.nii.gz"))
    assert not np.array_equal(s3, s4)


def test_phantom_looks_like_skull_stripped_brats(phantom_case_dir):
    case = find_cases(os.path.dirname(phantom_case_dir))[0]
    seg_img = sitk.ReadImage(case.paths["seg"])
    assert seg_img.GetSize() == BRATS_SIZE and seg_img.GetPixelID() == sitk.sitkUInt8
    assert np.allclose(seg_img.GetSpacing(), 1.0) and np.allclose(seg_img.GetDirection(), np.eye(3).ravel())
    seg = sitk.GetArrayFromImage(seg_img)
    assert set(np.unique(seg)) <= {0, 1, 2, 4} and {1, 2} <= set(np.unique(seg))
    img = {s: arr(case.paths[s]).astype(float) for s in ("t1", "t1ce", "t2", "flair")}
    brain = img["t1"] > 0
    assert 0.08 < brain.mean() < 0.35  # a brain, with exact zeros around it
    assert all((img[s] > 0).sum() == brain.sum() for s in img)
    assert (seg[~brain] == 0).all()
    normal = brain & (seg == 0)
    def med(s, m):
        return np.median(img[s][m]) / np.median(img[s][normal])
    assert med("flair", seg == 2) > 1.4     # edema bright on FLAIR
    assert med("t2", seg == 2) > 1.2        # and on T2
    assert med("t1", seg == 1) < 0.75       # necrosis dark on T1
    if (seg == 4).any():
        assert med("t1ce", seg == 4) > 1.5  # enhancing rim bright on T1ce
        assert np.median(img["t1ce"][seg == 4]) > 2 * np.median(img["t1ce"][seg == 1])


def test_phantom_bad_arguments(tmp_path):
    (tmp_path / "file").write_text("x")
    r = cli_main("phantom", str(tmp_path / "file"), "--n", "1")
    assert r.returncode == 2 and r.stderr.strip().endswith("exists and is not a folder")
    assert len(r.stderr.strip().splitlines()) == 1
    r = cli_main("phantom", str(tmp_path / "o"), "--n", "0")
    assert r.returncode == 2 and "--n must be at least 1" in r.stderr
