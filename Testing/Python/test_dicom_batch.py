"""DICOM series in, DICOM SEG and QC pictures out, and the batch summary (summary.csv, index.html).

The DICOM series are written by our own code (dicom_testdata.py) from the shared sample case, cut to
its head and taken to 2 mm (exact values and geometry), so that segmenting them is cheap; the model
is a tiny network calibrated on that case at 4 mm (conftest.save_tiny_bundle): random weights, but
labels that follow the image.
"""
import csv
import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import cli_in_a_fresh_process, cli_main, one_line_error, rotation_direction, save_tiny_bundle
from dicom_testdata import new_uid, small_sample, write_series
from PIL import Image

from BrainTumorSegLib.cli.batch import Batch, BatchOptions
from BrainTumorSegLib.errors import InputError
from BrainTumorSegLib.evaluation.metrics import dice
from BrainTumorSegLib.preprocess.transform import PreprocessOptions, preprocess
from BrainTumorSegLib.read import dicom_series
from BrainTumorSegLib.read import images as read_images
from BrainTumorSegLib.write import qc_picture, terminology

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "Resources", "Samples", "Brats18_TCIA01_231_1")
ROLES = ("t1", "t1ce", "t2", "flair")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """cases/DicomCase (a DICOM series per role subfolder, expert labels beside), cases/NiftiCase (the
    same volumes as NIfTI), cases/BrokenCase (its T1ce series misses a slice), and study/ (the four
    series in one folder)."""
    root = tmp_path_factory.mktemp("dicom")
    imgs = small_sample(SAMPLE, "Brats18_TCIA01_231_1")
    study, frame = new_uid(), new_uid()
    cases = root / "cases"
    for name in ("DicomCase", "NiftiCase", "BrokenCase"):
        (cases / name).mkdir(parents=True)
    t1ce_files, uids = [], {}
    for number, role in enumerate(ROLES, start=1):
        files = write_series(imgs[role], str(cases / "DicomCase" / role), f"{role} axial", study, frame, number)
        t1ce_files = files if role == "t1ce" else t1ce_files
        sitk.WriteImage(imgs[role], str(cases / "NiftiCase" / f"NiftiCase_{role}.nii.gz"))
        if role != "t1ce":
            sitk.WriteImage(imgs[role], str(cases / "BrokenCase" / f"BrokenCase_{role}.nii.gz"))
        uids[role] = new_uid()
        write_series(imgs[role], str(root / "study"), f"{role} axial", study, frame, number, uids[role], prefix=role)
    for name in ("DicomCase", "NiftiCase"):
        sitk.WriteImage(imgs["seg"], str(cases / name / f"{name}_seg.nii.gz"))
    broken = write_series(imgs["t1ce"], str(cases / "BrokenCase" / "t1ce"), "t1ce", new_uid(), new_uid())
    (cases / "Notes").mkdir()  # no case in it: the batch says it passed it over
    (cases / "Notes" / "readme.txt").write_text("not a case")
    os.unlink(broken[20])
    return SimpleNamespace(root=root, cases=cases, imgs=imgs, t1ce_files=t1ce_files, uids=uids, study=root / "study")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, data):
    paths = {r: str(data.cases / "NiftiCase" / f"NiftiCase_{r}.nii.gz") for r in ROLES}
    # working at 4 mm, the case is one window: cheap
    return save_tiny_bundle(preprocess(paths, PreprocessOptions(model_spacing=4.0)).data,
                            tmp_path_factory.mktemp("bundles") / "tiny-dicom", spacing_mm=4.0)


@pytest.fixture(scope="module")
def batch(data, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    r = cli_main("segment", "--cases", str(data.cases), "-o", str(out), "--model", tiny_model, "--dicom-seg", "yes")
    return SimpleNamespace(out=out, result=r)


def labels(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def summary(out) -> dict:
    with open(out / "summary.csv", newline="") as f:
        return {row["case"]: row for row in csv.DictReader(f)}


def test_batch_of_dicom_and_nifti_cases_goes_on_past_a_broken_one(batch, data):
    r, out = batch.result, batch.out
    assert r.returncode == 1, r.stderr  # some case failed
    from_dicom, from_nifti = labels(out / "DicomCase.nii.gz"), labels(out / "NiftiCase.nii.gz")
    assert np.array_equal(from_dicom, from_nifti)
    assert set(np.unique(from_dicom)) == {0, 1, 2, 4}  # the comparison is not trivial
    assert read_images.same_grid(sitk.ReadImage(str(out / "DicomCase.nii.gz")), data.imgs["t1ce"])
    rows = summary(out)
    assert list(rows) == ["BrokenCase", "DicomCase", "NiftiCase"]  # failures first
    bad = rows["BrokenCase"]
    assert bad["status"] == "failed" and "BrokenCase/t1ce: has 1 missing slice(s)" in bad["error"]
    ref = labels(data.cases / "DicomCase" / "DicomCase_seg.nii.gz")
    for name in ("DicomCase", "NiftiCase"):
        row = rows[name]
        assert row["status"] == "done" and row["model"] == "tiny" and float(row["seconds"]) > 0
        assert float(row["WT_ml"]) == pytest.approx(np.count_nonzero(from_dicom) * 8 / 1000, abs=1e-3)
        assert float(row["ED_ml"]) == pytest.approx(np.count_nonzero(from_dicom == 2) * 8 / 1000, abs=1e-3)
        assert float(row["dice_WT"]) == pytest.approx(dice(from_dicom > 0, ref > 0), abs=1e-4)
        assert row["qc_picture"] == f"{name}_qc.png"
    assert rows["DicomCase"]["dicom_seg"] == "DicomCase_seg.dcm"
    assert rows["NiftiCase"]["dicom_seg"] == "" and "no DICOM SEG" in rows["NiftiCase"]["warnings"]
    assert not any(p.name.startswith(("BrokenCase", ".btseg")) for p in out.iterdir())
    progress = [ln for ln in r.stderr.splitlines() if ln.startswith("[")]
    assert [ln.split(":")[0] for ln in progress] == ["[1/3] BrokenCase", "[2/3] DicomCase", "[3/3] NiftiCase"]
    assert all("ETA" in ln for ln in progress) and "missing slice" in progress[0]
    log = (out / "batch.log").read_text()
    assert all(ln in log for ln in progress)
    assert "not cases (no files named by role): Notes" in log and "not cases" in r.stderr


def test_a_batch_names_the_subfolders_it_passes_over_but_not_a_cases_series_folders(tmp_path):
    """A case held in the cases folder itself, its sequences as DICOM series subfolders: those
    subfolders are the case's, not folders passed over; a folder of notes is."""
    for name in ("t1", "t1ce", "t2", "flair", "Notes"):
        (tmp_path / "root" / name).mkdir(parents=True)
    (tmp_path / "out").mkdir()
    found = Batch(str(tmp_path / "root"), str(tmp_path / "out"), BatchOptions())
    assert [c.case_id for c in found.cases] == ["root"] and found.ignored == ["Notes"]


def test_dicom_seg_reads_back_onto_the_t1ce_series(batch, data):
    import highdicom as hd

    seg_path = str(batch.out / "DicomCase_seg.dcm")
    lab = labels(batch.out / "DicomCase.nii.gz")
    t1ce = [pydicom.dcmread(f, stop_before_pixels=True) for f in data.t1ce_files]  # in slice order
    sop_uids = [ds.SOPInstanceUID for ds in t1ce]
    seg = hd.seg.segread(seg_path)
    assert seg.SegmentationType == "BINARY" and seg.Modality == "SEG"
    assert seg.StudyInstanceUID == t1ce[0].StudyInstanceUID and seg.FrameOfReferenceUID == t1ce[0].FrameOfReferenceUID
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=sop_uids, segment_numbers=[1, 2, 3],
                                               assert_missing_frames_are_empty=True)
    for number, (segment, value) in enumerate(zip(terminology.SEGMENTS, (1, 2, 4)), start=1):
        assert np.array_equal(pixels[..., number - 1] > 0, lab == value), segment.key  # every slice
        desc = seg.get_segment_description(number)
        assert desc.segment_label == segment.title
        assert desc.segmented_property_type.value == segment.type.value
        assert desc.segmented_property_category.value == terminology.CATEGORY.value
        assert desc.algorithm_identification[0].AlgorithmName == "tiny"
        assert desc.algorithm_identification[0].AlgorithmVersion == "0"
    # the same through pydicom alone: references, frames and positions
    ds = pydicom.dcmread(seg_path)
    referenced = ds.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == t1ce[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} == set(sop_uids)
    frames = ds.pixel_array.reshape((-1,) + lab.shape[1:])
    assert len(frames) == int(ds.NumberOfFrames) > 0
    for frame, item in zip(frames, ds.PerFrameFunctionalGroupsSequence):
        k = sop_uids.index(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        number = item.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        assert np.array_equal(frame > 0, lab[k] == (1, 2, 4)[number - 1])
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        assert position == pytest.approx([float(v) for v in t1ce[k].ImagePositionPatient], abs=1e-3)
    assert "PatientName" not in pydicom.dcmread(data.t1ce_files[0])  # de-identified source, and it worked


def overlay_pixels(rgb: np.ndarray, colour) -> int:
    """Pixels that are a grey blended with ``colour`` at the QC overlay's opacity."""
    a = qc_picture.OVERLAY_ALPHA
    rest = rgb.astype(float) - a * 255 * np.array(colour)
    grey = np.abs(rest - rest.mean(axis=-1, keepdims=True)).max(axis=-1) <= 2.5
    return int(np.count_nonzero(grey & (rest.min(axis=-1) >= -1.5) & (np.ptp(rgb, axis=-1) > 20)))


def test_qc_picture_shows_the_labels_in_the_slicer_colours(batch):
    img = Image.open(batch.out / "DicomCase_qc.png")
    assert img.format == "PNG" and 800 <= img.width <= 1600 and 600 <= img.height <= 1600
    rgb = np.asarray(img.convert("RGB"))
    present = [overlay_pixels(rgb, s.colour) for s in terminology.SEGMENTS]
    assert sum(n > 50 for n in present) >= 2, present
    assert overlay_pixels(rgb, (0.2, 0.4, 0.9)) == 0  # a colour that is no label's


def test_qc_picture_keeps_the_physical_aspect_of_anisotropic_voxels(tmp_path):
    """A 30 mm tumor cube in voxels of 1 x 1 x 5 mm is drawn square in all six panels."""
    brain = np.zeros((24, 60, 60), np.float32)
    brain[2:22, 5:55, 5:55] = 100.0
    lab = np.zeros(brain.shape, np.uint8)
    lab[9:15, 15:45, 15:45] = 4
    t1ce = sitk.GetImageFromArray(brain)
    t1ce.SetSpacing((1.0, 1.0, 5.0))
    lab_img = sitk.GetImageFromArray(lab)
    lab_img.CopyInformation(t1ce)
    png = qc_picture.render("Cube", t1ce, t1ce, lab_img, "brats2021", {"ET": 27.0, "WT": 27.0}, "m")
    (tmp_path / "cube.png").write_bytes(png)
    rgb = np.asarray(Image.open(tmp_path / "cube.png").convert("RGB"))
    from scipy import ndimage

    blobs, n = ndimage.label(np.ptp(rgb, axis=-1) > 40)
    sizes = ndimage.sum(np.ones(blobs.shape), blobs, range(1, n + 1))
    boxes = [ndimage.find_objects(blobs)[i] for i in np.argsort(sizes)[::-1][:6]]  # the six panels' cubes
    ratios = [(b[0].stop - b[0].start) / (b[1].stop - b[1].start) for b in boxes]
    assert all(0.85 < r < 1.15 for r in ratios), ratios


def test_a_rerun_with_skip_existing_skips_the_cases_done(batch, data, tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(batch.out, out)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name.startswith(("DicomCase", "NiftiCase"))}
    r = cli_main("segment", "--cases", str(data.cases), "-o", str(out), "--model", tiny_model, "--dicom-seg", "yes",
                 "--skip-existing")
    assert r.returncode == 1, r.stderr  # the broken case is tried again, and fails again
    assert "[2/3] DicomCase: skipped: its files are there (--skip-existing)" in r.stderr
    assert "[3/3] NiftiCase: skipped" in r.stderr and "[1/3] BrokenCase: FAILED" in r.stderr
    assert stamps == {p: (out / p).stat().st_mtime_ns for p in stamps}
    before, after = summary(batch.out), summary(out)
    assert after["DicomCase"]["status"] == "skipped"
    for key in ("WT_ml", "dice_ET", "model", "seconds", "qc_picture", "dicom_seg"):
        assert after["DicomCase"][key] == before["DicomCase"][key]
    page = (out / "index.html").read_text()
    assert page.count('<img class="qc"') == 2 and "2 skipped (done before), 1 failed" in page
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # a machine without the qc extra: the page says so
    r = cli_main("segment", "--cases", str(data.cases), "-o", str(out), "--model", tiny_model, "--skip-existing")
    assert r.returncode == 1 and "[3/3] NiftiCase: skipped" in r.stderr, r.stderr
    page = (out / "index.html").read_text()
    assert "No QC pictures: matplotlib is not installed" in page and '<img class="qc"' not in page


def test_index_page_lists_failures_first_with_every_picture(batch):
    page = (batch.out / "index.html").read_text()
    assert page.index("BrokenCase") < page.index("DicomCase") < page.index("NiftiCase")
    assert 'src="DicomCase_qc.png"' in page and 'src="NiftiCase_qc.png"' in page
    assert "has 1 missing slice(s)" in page and "not a medical device" in page and "<script" in page


def test_one_case_from_a_study_folder_chosen_by_series_uid(data, batch, tiny_model, tmp_path):
    out = tmp_path / "labels.nii.gz"
    args = [a for r in ROLES for a in (f"--{r}", str(data.study), "--series-uid", f"{r}={data.uids[r]}")]
    r = cli_main("segment", *args, "-o", str(out), "--model", tiny_model, "--quiet", "--qc", str(tmp_path / "qc.png"),
                 "--uncertainty", str(tmp_path / "u.nii.gz"), "--dicom-seg", str(tmp_path / "seg.dcm"),
                 "--report", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    assert np.array_equal(labels(out), labels(batch.out / "NiftiCase.nii.gz"))
    chosen = json.loads((tmp_path / "r.json").read_text())["dicom_series"]
    assert {role: chosen[role]["series_uid"] for role in ROLES} == data.uids
    three_rows, two_rows = Image.open(tmp_path / "qc.png"), Image.open(batch.out / "DicomCase_qc.png")
    assert three_rows.height > two_rows.height * 1.2  # the uncertainty row
    assert pydicom.dcmread(tmp_path / "seg.dcm").ReferencedSeriesSequence[0].SeriesInstanceUID == data.uids["t1ce"]


def _series_with(tmp_path, data, name: str, change) -> str:
    """A copy of DicomCase's T1ce series, with ``change(datasets)`` applied to its files."""
    folder = tmp_path / name
    shutil.copytree(data.cases / "DicomCase" / "t1ce", folder)
    files = sorted(str(p) for p in folder.iterdir())
    datasets = [pydicom.dcmread(f) for f in files]
    change(datasets)
    for ds, f in zip(datasets, files):
        ds.save_as(f)
    return str(folder)


def test_bad_dicom_inputs_are_one_line_errors_and_write_nothing(data, tiny_model, tmp_path, monkeypatch):
    nifti = {r: str(data.cases / "NiftiCase" / f"NiftiCase_{r}.nii.gz") for r in ROLES}
    out = tmp_path / "out"
    out.mkdir()

    def run(t1ce, *extra):
        args = [a for r in ROLES for a in (f"--{r}", t1ce if r == "t1ce" else nifti[r])]
        return cli_main("segment", *args, "-o", str(out / "labels.nii.gz"), "--model", tiny_model, "--quiet", *extra)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")

    def uneven(dss):
        for ds in dss[30:]:
            ds.ImagePositionPatient[2] += 1.0

    def tilted(dss):
        dss[5].ImageOrientationPatient = [1, 0, 0, 0, 0.9950042, 0.0998334]

    one_line_error(run(str(empty)), "empty: holds no DICOM series")
    one_line_error(run(str(data.cases / "BrokenCase" / "t1ce")), "BrokenCase/t1ce: has 1 missing slice(s)",
                   "gap of 4.00 mm")
    one_line_error(run(_series_with(tmp_path, data, "uneven", uneven)), "uneven: has uneven slice spacing",
                   "2.00 to 3.00 mm")
    one_line_error(run(_series_with(tmp_path, data, "tilted", tilted)), "tilted: mixes slice orientations")
    r = run(str(data.study))
    one_line_error(r, "study: holds 4 DICOM series", "--series-uid", "'t1ce axial' UID " + data.uids["t1ce"],
                   f"({len(data.t1ce_files)} files)")
    one_line_error(run(str(data.study), "--series-uid", "t1ce=1.2.3"), "holds none of the series", "1.2.3")
    one_line_error(run(nifti["t1ce"], "--dicom-seg", str(out / "s.dcm")), "s.dcm: a DICOM SEG needs the T1ce as a "
                                                                          "DICOM series")
    one_line_error(run(str(data.study), "--series-uid", "t1ce=1.2.3", "--series-uid", "dwi=4"), "--series-uid",
                   "must be one of t1, t1ce, t2, flair")
    monkeypatch.setitem(sys.modules, "highdicom", None)  # as if the dicom extra were not installed
    one_line_error(run(str(data.study), "--dicom-seg", str(out / "s.dcm")), "highdicom",
                   'pip install "BrainTumorSegLib[dicom]"')
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # nor the qc extra
    one_line_error(run(nifti["t1ce"], "--qc", str(out / "qc.png")), "matplotlib", 'pip install "BrainTumorSegLib[qc]"')
    assert list(out.iterdir()) == []


def test_dicom_mistakes_are_refused_before_any_weights_are_read(data, tmp_path):
    """Series, DICOM SEG and QC picture are checked with every other input, before the model: in a
    fresh process neither torch nor safetensors is imported; a batch whose every case is refused
    records them all and never loads the model."""
    nifti = {r: str(data.cases / "NiftiCase" / f"NiftiCase_{r}.nii.gz") for r in ROLES}
    out = tmp_path / "labels.nii.gz"

    def argv(t1ce, *extra):
        return ["segment", *[a for r in ROLES for a in (f"--{r}", t1ce if r == "t1ce" else nifti[r])], "-o", str(out),
                "--quiet", *extra]

    (tmp_path / "only").mkdir()
    shutil.copytree(data.cases / "BrokenCase", tmp_path / "only" / "BrokenCase")
    twice = tmp_path / "only" / "NiftiCase"  # two T1ce files: that case fails, the batch goes on (it stopped)
    shutil.copytree(data.cases / "NiftiCase", twice)
    shutil.copy(twice / "NiftiCase_t1ce.nii.gz", twice / "NiftiCase_t1ce.nrrd")
    (tmp_path / "results").mkdir()
    (tmp_path / "two").mkdir()  # two slices: too thin a volume to register or segment
    for f in sorted((data.cases / "DicomCase" / "t1ce").iterdir())[10:12]:
        shutil.copy(f, tmp_path / "two")

    def other_frame(dss):
        dss[7].FrameOfReferenceUID = "1.2.3.4"

    expected = [
        (argv(str(tmp_path / "two")), ["two: spans only", "x4 mm", "at least 4 voxels and 4 mm along every axis"]),
        (argv(_series_with(tmp_path, data, "frames", other_frame)), ["frames: mixes frames of reference",
                                                                     "Frame of Reference UID"]),
        (argv(str(data.cases / "BrokenCase" / "t1ce")), ["BrokenCase/t1ce: has 1 missing slice(s)"]),
        (argv(str(data.study)), ["study: holds 4 DICOM series", "--series-uid"]),
        (argv(str(data.study), "--series-uid", "t1ce=1.2.3"), ["holds none of the series", "1.2.3"]),
        (argv(nifti["t1ce"], "--dicom-seg", str(tmp_path / "s.dcm")), ["a DICOM SEG needs the T1ce as a DICOM series"]),
        (argv(nifti["t1ce"], "--qc", str(tmp_path / "qc.jpg")), ["qc.jpg", "name it .png"]),
        (argv(str(data.cases / "DicomCase" / "t1ce"), "--dicom-seg", str(tmp_path / "results")),
         ["results: is a folder", "e.g. " + str(tmp_path / "results" / "seg.dcm")]),
        (argv(nifti["t1ce"], "--qc", str(tmp_path / "results")), ["e.g. " + str(tmp_path / "results" / "qc.png")]),
    ]
    batch = ["segment", "--cases", str(tmp_path / "only"), "-o", str(tmp_path / "results"), "--quiet"]
    runs, heavy = cli_in_a_fresh_process([a for a, _ in expected] + [batch])
    for (_argv, fragments), r in zip(expected, runs):
        one_line_error(r, *fragments)
    assert runs[-1].returncode == 1, runs[-1].stderr
    assert "[1/2] BrokenCase: FAILED" in (tmp_path / "results" / "batch.log").read_text()
    assert "[1/2] BrokenCase: FAILED" in runs[-1].stderr  # --quiet hides progress, not failures
    assert "[2/2] NiftiCase: FAILED" in runs[-1].stderr and "second t1ce for case NiftiCase" in runs[-1].stderr
    assert [summary(tmp_path / "results")[c]["status"] for c in ("BrokenCase", "NiftiCase")] == ["failed", "failed"]
    assert heavy == []  # no network built, no weights read
    assert not out.exists() and not (tmp_path / "s.dcm").exists() and not (tmp_path / "qc.jpg").exists()


def test_damaged_slices_are_refused_from_their_headers_naming_the_file(data, tmp_path):
    """Each of these read with exit 0 before (a colour series crashed): a slice with part of its pixel
    data missing was read with that part zero, a slice of another resolution stretched, a missing or
    zero Pixel Spacing taken as 1 mm; slices too far apart were refused only after the model loaded.
    Each is refused before any weights are read, naming the file or the folder."""
    def rgb(dss):
        for ds in dss:
            a = ds.pixel_array
            grey = (255 * (a - a.min()) / max(1, int(np.ptp(a)))).astype(np.uint8)
            ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
            ds.PixelData = np.stack([grey] * 3, -1).tobytes()

    def short(dss):
        dss[20].PixelData = dss[20].PixelData[:len(dss[20].PixelData) // 2]

    def scaled(dss):
        for ds in dss:
            ds.ImageOrientationPatient = [2 * float(v) for v in ds.ImageOrientationPatient]

    def spacing(value, which=slice(None)):
        def change(dss):
            for ds in dss[which]:
                if value is None:
                    del ds.PixelSpacing
                else:
                    ds.PixelSpacing = value
        return change

    def no_uid(dss):
        del dss[20].SOPInstanceUID

    def far_apart(dss):  # the slice positions written in cm instead of mm, say
        for ds in dss:
            ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], 50 * float(ds.ImagePositionPatient[2])]

    expected = [
        (_series_with(tmp_path, data, "rgb", rgb), ["IM0000.dcm", "is a colour image (3 samples per pixel"]),
        (_series_with(tmp_path, data, "short", short), ["IM0020.dcm", "bytes of pixel data where", "damaged or cut"]),
        (_series_with(tmp_path, data, "scaled", scaled), ["IM0000.dcm", "not two perpendicular unit vectors"]),
        (_series_with(tmp_path, data, "nospacing", spacing(None)), ["IM0000.dcm", "no valid Pixel Spacing"]),
        (_series_with(tmp_path, data, "zero", spacing([0, 0])), ["IM0000.dcm", "invalid Pixel Spacing (0 x 0 mm)"]),
        (_series_with(tmp_path, data, "mixed", spacing([1, 1], slice(20, 21))),
         ["mixed: mixes pixel spacings", "IM0020.dcm: 1 x 1 mm"]),
        (_series_with(tmp_path, data, "nouid", no_uid), ["IM0020.dcm", "has no SOP Instance UID"]),
        (_series_with(tmp_path, data, "far", far_apart), ["far: spans", "more than a head scan's 400 mm"]),
    ]
    cut = _series_with(tmp_path, data, "cut", lambda dss: None)
    with open(os.path.join(cut, "IM0020.dcm"), "r+b") as f:  # a copy stopped half way
        f.truncate(os.path.getsize(f.name) // 2)
    expected.append((cut, ["cut: has 1 missing slice(s)", "IM0020.dcm in the folder cannot be read as DICOM"]))
    assert sorted(os.listdir(cut))[20] == "IM0020.dcm"
    nifti = {r: str(data.cases / "NiftiCase" / f"NiftiCase_{r}.nii.gz") for r in ROLES}
    out = tmp_path / "labels.nii.gz"
    runs, heavy = cli_in_a_fresh_process(
        [["segment", *[a for r in ROLES for a in (f"--{r}", t1ce if r == "t1ce" else nifti[r])], "-o", str(out)]
         for t1ce, _ in expected])
    for (_t1ce, fragments), r in zip(expected, runs):
        one_line_error(r, *fragments)
    assert heavy == [] and not out.exists()


def test_sequences_of_two_patients_are_warned_of_without_their_ids(data, tiny_model, tmp_path):
    def patient(pid):
        def change(dss):
            for ds in dss:
                ds.PatientID = pid
        return change

    t1ce = _series_with(tmp_path, data, "t1ce", patient("PAT-A"))
    flair = tmp_path / "flair"
    shutil.copytree(data.cases / "DicomCase" / "flair", flair)
    for f in flair.iterdir():
        ds = pydicom.dcmread(f)
        ds.PatientID = "PAT-B"
        ds.save_as(f)
    nifti = {r: str(data.cases / "NiftiCase" / f"NiftiCase_{r}.nii.gz") for r in ROLES}
    r = cli_main("segment", "--t1", nifti["t1"], "--t1ce", t1ce, "--t2", nifti["t2"], "--flair", str(flair),
                 "-o", str(tmp_path / "labels.nii.gz"), "--report", str(tmp_path / "r.json"), "--model", tiny_model,
                 "--quiet")
    assert r.returncode == 0, r.stderr
    warned = [w for w in json.loads((tmp_path / "r.json").read_text())["warnings"] if "Patient IDs" in w]
    assert warned == ["the DICOM series of t1ce, flair record different Patient IDs: check that the sequences "
                      "belong to one patient"]
    assert "Patient IDs" in r.stderr and "PAT-" not in r.stderr + (tmp_path / "r.json").read_text()
    same = {"t1ce": dicom_series.read_series(t1ce), "flair": dicom_series.read_series(_series_with(
        tmp_path, data, "again", patient("PAT-A")))}
    assert dicom_series.patient_mismatch(same) is None
    same["t1"] = dicom_series.read_series(data.cases / "DicomCase" / "t1")  # not recorded: not compared
    assert dicom_series.patient_mismatch(same) is None


def test_slices_with_an_icon_image_or_in_implicit_vr_are_read_whole(data, tmp_path):
    # the icon's own Pixel Data element comes first in the file: the slice's check must not stop at it
    def icon(dss):
        for ds in dss:
            item = pydicom.Dataset()
            item.SamplesPerPixel, item.PhotometricInterpretation, item.Rows, item.Columns = 1, "MONOCHROME2", 16, 16
            item.BitsAllocated, item.BitsStored, item.HighBit, item.PixelRepresentation = 8, 8, 7, 0
            item.PixelData = bytes(256)
            ds.IconImageSequence = pydicom.Sequence([item])

    expected = sitk.GetArrayFromImage(dicom_series.read_series(data.cases / "DicomCase" / "t1ce").image)
    with_icon = _series_with(tmp_path, data, "icon", icon)
    implicit = tmp_path / "implicit"
    shutil.copytree(with_icon, implicit)
    for f in implicit.iterdir():
        ds = pydicom.dcmread(f)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        ds.save_as(f, implicit_vr=True, little_endian=True)
    for folder in (with_icon, implicit):
        assert np.array_equal(sitk.GetArrayFromImage(dicom_series.read_series(folder).image), expected), folder


def test_no_dicom_seg_is_written_into_an_input_series_folder(data, tmp_path):
    # written there, it joined the series: the next run found two series in the folder
    series = _series_with(tmp_path, data, "t1ce", lambda dss: None)
    before = sorted(os.listdir(series))
    nifti = {r: str(data.cases / "NiftiCase" / f"NiftiCase_{r}.nii.gz") for r in ROLES}
    args = [a for r in ROLES for a in (f"--{r}", series if r == "t1ce" else nifti[r])]
    runs, heavy = cli_in_a_fresh_process([
        ["segment", *args, "-o", str(tmp_path / "labels.nii.gz"), "--dicom-seg", os.path.join(series, "seg.dcm")]])
    one_line_error(runs[0], "is inside the input series folder", "write it elsewhere")
    assert sorted(os.listdir(series)) == before and heavy == []


def test_an_oblique_series_is_read_in_position_order_with_its_geometry(data, tmp_path):
    img = data.imgs["t1ce"]
    rotation = np.array(rotation_direction(12, 0)).reshape(3, 3) @ np.array(rotation_direction(-7, 2)).reshape(3, 3)
    img = sitk.Image(img)
    img.SetDirection(rotation.ravel().tolist())
    files = write_series(img, str(tmp_path / "oblique"), "oblique t1ce", new_uid(), new_uid())
    for k, f in enumerate(files):  # names in reverse slice order: the order comes from the positions
        os.rename(f, tmp_path / "oblique" / f"x{len(files) - k:04d}.dcm")
    series = dicom_series.read_series(tmp_path / "oblique")
    back = series.image
    assert np.allclose(back.GetDirection(), img.GetDirection(), atol=1e-6)
    assert np.allclose(back.GetOrigin(), img.GetOrigin(), atol=1e-4)
    assert np.allclose(back.GetSpacing(), img.GetSpacing(), atol=1e-6)
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img).astype(np.float32))
    assert [os.path.basename(f) for f in series.files][:2] == [f"x{len(files):04d}.dcm", f"x{len(files) - 1:04d}.dcm"]
    assert read_images.same_grid(read_images.read_image(tmp_path / "oblique"), back)  # any image input may be a series folder
    with pytest.raises(InputError, match="is a folder"):
        read_images.read_image(tmp_path / "oblique", "label")


def test_segment_terminology_is_the_slicer_modules():
    """The Slicer module builds its segments from these; its serialised entries must not change."""
    entries = [terminology.slicer_terminology_entry(s) for s in terminology.SEGMENTS]
    context = "Segmentation category and type - DICOM master list~SCT^49755003^Morphologically Altered Structure~"
    anatomy = "~Anatomic codes - DICOM master list~SCT^12738006^Brain~^^"
    assert entries == [f"{context}SCT^6574001^Necrosis~^^{anatomy}", f"{context}SCT^79654002^Edema~^^{anatomy}",
                       f"{context}SCT^108369006^Neoplasm~^^{anatomy}"]
    assert [s.colour for s in terminology.SEGMENTS] == [(0.80, 0.18, 0.18), (0.35, 0.80, 0.35), (0.98, 0.85, 0.20)]
    assert terminology.cielab((1.0, 1.0, 1.0)) == (65535, 32896, 32896)  # white: L* 100, a* = b* = 0


def _picture_blocks(png_path) -> int:
    """Runs of at least 200 screenshot rows each holding 100 or more near-black pixels: one per QC
    picture shown (black behind its slices; the page is white, its text a few pixels a row)."""
    dark = (np.asarray(Image.open(png_path).convert("RGB")) < 40).all(axis=-1).sum(axis=1) >= 100
    edges = np.flatnonzero(np.diff(np.concatenate([[0], dark.astype(int), [0]])))
    return int(np.sum(edges[1::2] - edges[::2] >= 200))


@pytest.mark.slow
def test_index_page_in_a_real_browser_shows_every_cases_picture(batch, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    shots = {}
    for name, page in (("with", batch.out), ("without", tmp_path / "no-pictures")):
        if name == "without":  # the same page with its pictures gone: the blocks must go with them
            shutil.copytree(batch.out, page)
            for p in page.glob("*_qc.png"):
                p.unlink()
        shots[name] = tmp_path / f"{name}.png"
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--screenshot={shots[name]}", "--window-size=1400,2400", (page / "index.html").as_uri()],
                       check=True, capture_output=True, timeout=120)
    assert _picture_blocks(shots["with"]) == 2  # DicomCase's and NiftiCase's
    assert _picture_blocks(shots["without"]) == 0
