import os

import pytest

from BrainTumorSegLib.errors import InputError
from BrainTumorSegLib.read.cases import Case, case_file_name, find_case, find_cases, parse_name


def touch(folder, *names):
    os.makedirs(folder, exist_ok=True)
    for n in names:
        open(os.path.join(folder, n), "w").close()


def test_parse_names_2021_and_2023():
    assert parse_name("BraTS2021_00012_t1ce.nii.gz") == ("BraTS2021_00012", "t1ce", "t1ce")
    assert parse_name("BraTS2021_00012_t1.nii.gz") == ("BraTS2021_00012", "t1", "t1")
    assert parse_name("BraTS2021_00012_flair.nii") == ("BraTS2021_00012", "flair", "flair")
    assert parse_name("BraTS-GLI-00000-000-t1c.nii.gz") == ("BraTS-GLI-00000-000", "t1ce", "t1c")
    assert parse_name("BraTS-GLI-00000-000-t1n.nii.gz")[1] == "t1"
    assert parse_name("BraTS-GLI-00000-000-t2w.nrrd")[1] == "t2"
    assert parse_name("BraTS-GLI-00000-000-t2f.mha")[1] == "flair"
    assert parse_name("BraTS-GLI-00000-000-seg.nii.gz")[1] == "seg"
    assert parse_name("notes.txt") is None
    assert parse_name("brain.nii.gz") is None


def test_find_case_by_role_not_position(tmp_path):
    # Names sorted alphabetically put flair first: roles must come from names only.
    touch(tmp_path / "c", "X_flair.nii.gz", "X_seg.nii.gz", "X_t1.nii.gz", "X_t1ce.nii.gz", "X_t2.nii.gz")
    case = find_case(tmp_path / "c")
    assert case.case_id == "X"
    assert {r: os.path.basename(p) for r, p in case.paths.items()} == {
        "flair": "X_flair.nii.gz", "seg": "X_seg.nii.gz", "t1": "X_t1.nii.gz",
        "t1ce": "X_t1ce.nii.gz", "t2": "X_t2.nii.gz"}
    assert case.layout == "brats2021"


def test_find_cases_2023_layout(tmp_path):
    for cid in ("BraTS-GLI-00001-000", "BraTS-GLI-00002-000"):
        touch(tmp_path / cid, *(f"{cid}-{s}.nii.gz" for s in ("t1n", "t1c", "t2w", "t2f", "seg")))
    cases = find_cases(tmp_path)
    assert [c.case_id for c in cases] == ["BraTS-GLI-00001-000", "BraTS-GLI-00002-000"]
    assert all(c.layout == "brats2023" and not c.missing(("t1", "t1ce", "t2", "flair", "seg"))
               for c in cases)


def test_missing_role_is_named(tmp_path):
    touch(tmp_path / "c", "X_t1.nii.gz", "X_t1ce.nii.gz", "X_t2.nii.gz")
    with pytest.raises(InputError, match="case X has no flair file"):
        find_case(tmp_path / "c").require()


def test_explicit_paths_and_errors(tmp_path):
    c = Case.from_paths(t1="a.nii", t1ce="b.nii", t2="c.nii", flair="d.nii")
    assert c.sequences == {"t1": "a.nii", "t1ce": "b.nii", "t2": "c.nii", "flair": "d.nii"}
    with pytest.raises(ValueError):
        Case.from_paths(t3="x.nii")
    touch(tmp_path / "d", "X_t1.nii.gz", "X_t1.nii")
    with pytest.raises(InputError, match="second t1 for case X"):
        find_case(tmp_path / "d")
    touch(tmp_path / "e", "README.txt")
    with pytest.raises(InputError, match="holds no case files"):
        find_case(tmp_path / "e")


def test_case_file_names():
    assert case_file_name("A", "t1ce") == "A_t1ce.nii.gz"
    assert case_file_name("A", "flair", "brats2023") == "A-t2f.nii.gz"


def test_files_named_by_role_alone_belong_to_their_folder(tmp_path):
    # Many exports name the sequences t1.nii.gz, T1CE.nii.gz...: the case is then named after its folder.
    touch(tmp_path / "patient 1", "t1.nii.gz", "T1CE.nii.gz", "t2.nrrd", "FLAIR.nii", "seg.nii.gz", "notes.txt")
    touch(tmp_path / "p2", "t1n.nii.gz", "t1c.nii.gz", "t2w.nii.gz", "t2f.nii.gz")
    cases = find_cases(tmp_path)
    assert [c.case_id for c in cases] == ["p2", "patient 1"]
    p2, p1 = cases
    assert {r: os.path.basename(p) for r, p in p1.paths.items()} == {
        "t1": "t1.nii.gz", "t1ce": "T1CE.nii.gz", "t2": "t2.nrrd", "flair": "FLAIR.nii", "seg": "seg.nii.gz"}
    assert p1.layout == "brats2021" and p2.layout == "brats2023" and not p2.missing()
    assert find_case(tmp_path / "patient 1").case_id == "patient 1"
    touch(tmp_path / "p3", "t1ce.nii.gz", "T1c.nii.gz")
    with pytest.raises(InputError, match="second t1ce for case p3"):
        find_case(tmp_path / "p3")
    p3 = {c.case_id: c for c in find_cases(tmp_path, keep_going=True)}["p3"]  # a batch's: that case alone fails
    with pytest.raises(InputError, match=r"second t1ce for case p3 \(first: T1c.nii.gz\); keep one"):
        p3.require(("t1ce",))
    touch(tmp_path / "p5", "t1ce.nii.gz", "flair.nii.gz")
    touch(tmp_path / "p5" / "t1c", "IM0001.dcm")  # the T1ce also as a DICOM series folder
    p5 = {c.case_id: c for c in find_cases(tmp_path, keep_going=True)}["p5"]
    with pytest.raises(InputError, match=r"p5/t1c: second t1ce for case p5 \(first: t1ce.nii.gz\); keep one"):
        p5.require(("t1ce",))
    touch(tmp_path / "p4", "brain.nii.gz", "t3.nii.gz")
    with pytest.raises(InputError, match="holds no case files"):
        find_case(tmp_path / "p4")


def test_one_case_in_two_folders_names_both(tmp_path):
    touch(tmp_path / "a", "X_t1ce.nii.gz", "X_flair.nii.gz")
    touch(tmp_path / "b", "X_t1ce.nii.gz", "X_flair.nii.gz")
    with pytest.raises(InputError, match=r"case id X appears in more than one place \(also in .*a\)") as e:
        find_cases(tmp_path)
    assert os.path.basename(e.value.where or "") == "b"
