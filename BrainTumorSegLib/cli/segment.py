"""``braintumorseg segment``: its arguments, and the order of its work.

Everything quick is checked before any weights are read, in this order: the options (declared and
checked in :mod:`segment_options`), then each case: what its DICOM SEG and QC picture need (the
extras installed, a DICOM T1ce), its inputs from their headers alone (a volume file, or a folder
holding one DICOM series: :func:`dicom_series.check_series`), its outputs (writable, distinct, none
of them an input) and its expert labels; then the models' manifests. Only then is torch imported
and are the weights read, once for every case. With ``--cases`` (:mod:`batch`) a case that fails
its checks is a failed case of the batch: the others go on, and the models load for the first one
that passed.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Callable, Dict, List, NamedTuple, Optional

from .. import progress, segment_options
from ..errors import InputError
from ..read.cases import OPTIONAL_SEQUENCES, REQUIRED_SEQUENCES, SEQUENCES, sequences_needed

if TYPE_CHECKING:
    import SimpleITK as sitk

    from ..models.ensembles import Models
    from ..pipeline import SegmentationResult
    from ..read.cases import Case
    from ..segment_options import SegmentOptions
    from ..write.extra_outputs import CaseFiles

PROG = "braintumorseg"


class _ProgressBar:
    """One line on stderr: stage and percentage. With ``BRAINTUMORSEG_PROGRESS=lines`` (set by the
    Slicer module, which runs this command in the background) it prints ``progress STAGE FRACTION``
    lines on stdout instead."""

    def __init__(self, enabled: bool) -> None:
        self.lines = progress.lines_wanted()
        self.enabled = enabled and sys.stderr.isatty()
        self.last = ""

    def __call__(self, stage: str, fraction: float) -> None:
        if self.lines:
            print(progress.format_line(stage, fraction), flush=True)
            return
        if not self.enabled:
            return
        width = 30
        filled = int(round(fraction * width))
        line = f"\r[{'#' * filled}{'.' * (width - filled)}] {fraction:4.0%} {stage:<16}"
        if line != self.last:
            print(line, end="", file=sys.stderr, flush=True)
            self.last = line
        if stage == "done":
            print("", file=sys.stderr)


class _Job(NamedTuple):
    """One case to segment: its inputs (files or DICOM series folders), where each of its outputs
    goes, and its expert labels when there are."""

    case_id: str
    inputs: Dict[str, str]
    files: "CaseFiles"
    reference_labels: Optional[str] = None
    labels_file: Optional[str] = None  # the case folder's own expert labels: never an output either


def _check_inputs(inputs: Dict[str, str], series_uids: Optional[List[str]]) -> List[str]:
    """Each input from its header(s) alone: a volume file, or a folder holding one DICOM series
    (chosen by ``--series-uid``) with its slices checked. Returns every file read (for outputs)."""
    from ..read.dicom_series import check_series, is_series_folder, parse_series_uids
    from ..read.images import check_image_file

    wanted = parse_series_uids(series_uids, list(inputs))
    files: List[str] = []
    roles: Dict[str, str] = {}  # a volume file given for two sequences is a slip (a study folder may hold several series)
    for role, path in inputs.items():
        if is_series_folder(path):
            files += check_series(path, *wanted[role])[1]
        else:
            check_image_file(path)
            files.append(path)
            first = roles.setdefault(os.path.realpath(path), role)
            if first != role:
                raise InputError(path, f"is given for both {first} and {role}; each sequence needs its own file")
    return files


def _check_job(job: _Job, series_uids: Optional[List[str]]) -> None:
    """What the DICOM SEG and QC picture need, inputs readable (headers), outputs writable, distinct
    and none of them an input: before anything slow."""
    from ..read.formats import read_files, written_files
    from ..write import extra_outputs
    from ..write.atomic import check_not_input
    from ..write.images import check_output_path

    f = job.files
    extra_outputs.check(f, job.inputs)  # the extras installed, a DICOM T1ce for the SEG, their paths
    read = _check_inputs(job.inputs, series_uids)
    for path in (f.labels, f.uncertainty, f.brain_mask):
        if path:
            check_output_path(path)
    if f.report:
        check_output_path(f.report, image=False)
    inputs = [file for p in (*job.inputs.values(), *read, job.reference_labels, job.labels_file) if p
              for file in read_files(p)]  # a detached header's data files too
    written = [(path, file) for path in f.paths() for file in written_files(path)]
    for path, file in written:
        check_not_input(file, inputs, path)
    real = [os.path.realpath(file) for _, file in written]
    for (path, file), r in zip(written, real):
        if real.count(r) > 1:
            raise InputError(path, "is given for two outputs; give each its own file" if file == path else
                                   f"would write its data file {file}, which another output is given; give each "
                                   "its own file")


def _not_a_file(path: str, option: str, needed: str) -> None:
    if os.path.isfile(path):
        raise InputError(path, f"is a file; {option} needs {needed}")


def _given(args: argparse.Namespace) -> Dict[str, str]:
    """The sequences given one by one; exactly one of them, ``--case`` or ``--cases``."""
    given = {r: getattr(args, r) for r in SEQUENCES if getattr(args, r)}
    if sum([bool(args.case), bool(args.cases), bool(given)]) != 1:
        raise InputError(None, "give one of: the sequences (--t1ce --flair, and --t1 --t2 where there are), "
                               "--case DIR, --cases DIR")
    return given


def _case_job(args: argparse.Namespace, given: Dict[str, str]) -> _Job:
    """``--case`` or the sequences one by one: one case, its outputs where the command line says."""
    from ..read.cases import find_case
    from ..read.formats import strip_extension
    from ..write.extra_outputs import CaseFiles

    case_id, inputs, example, labels_file = strip_extension(os.path.basename(args.output)), given, "case", None
    if args.case:
        _not_a_file(args.case, "--case", "a case folder (for single files give --t1, --t1ce, --t2 and --flair)")
        case = find_case(args.case).require(REQUIRED_SEQUENCES)
        case_id = example = case.case_id
        inputs, labels_file = case.sequences, case.paths.get("seg")
    if os.path.isdir(args.output):
        raise InputError(args.output, "is a folder; -o takes a file name, e.g. "
                                      f"{os.path.join(args.output, example + '_pred.nii.gz')} (a folder is for --cases)")
    files = CaseFiles(args.output, args.uncertainty, args.report, args.brain_mask, args.dicom_seg, args.qc)
    return _Job(case_id, inputs, files, args.reference_labels, labels_file)


def _segment_one(job: _Job, reference: Optional["sitk.Image"], args: argparse.Namespace,
                 opts: "SegmentOptions", models: "Models") -> dict:
    """Segment one checked case and write its files: all are made before any is written, and they
    appear together (``atomic.together``). ``reference``: its expert labels read before, else read
    here (a batch's case)."""
    from ..pipeline import segment
    from ..read.dicom_series import patient_mismatch, read_inputs
    from ..write import extra_outputs
    from ..write.atomic import together, write_json
    from ..write.images import write_image

    series = read_inputs(job.inputs, args.series_uid)  # sequences given as DICOM series folders, read and checked
    images = {r: series[r].image if r in series else p for r, p in job.inputs.items()}
    inputs = [*job.inputs.values(), *(f for s in series.values() for f in s.files),
              *(p for p in (job.reference_labels, job.labels_file) if p)]
    if reference is None and job.reference_labels:
        reference = _read_reference(job.reference_labels, images["t1ce"])
    res = segment(images, models, options=opts, progress=_ProgressBar(not args.quiet))
    mismatch = patient_mismatch(series)
    if mismatch:
        res.warnings.append(mismatch)
    files = job.files
    pending = extra_outputs.make(files, res, images, series.get("t1ce"), job.case_id)
    rep = dict(res.report(), inputs=job.inputs, output=files.labels, dicom_series={
        r: {"folder": s.folder, "series_uid": s.uid, "files": len(s.files)} for r, s in series.items()})
    if reference is not None:
        assert job.reference_labels is not None
        rep["against_reference"] = _score_against(res, reference, job.reference_labels)
        print("against the reference labels: " + ", ".join(
            f"{r} Dice {rep['against_reference'][r]['dice']:.3f} HD95 {rep['against_reference'][r]['hd95_mm']:.1f} mm"
            for r in ("WT", "TC", "ET")))
    with together():  # the case's files appear all at once, or none of them
        for image, path in ((res.labels, files.labels), (res.uncertainty, files.uncertainty),
                            (res.brain_mask, files.brain_mask)):
            if path:
                assert image is not None  # asked for through SegmentOptions(uncertainty=True, brain_mask=True)
                write_image(image, path, inputs)
        extra_outputs.write(pending, inputs)
        if files.report:
            write_json(files.report, rep, inputs)
    _say(res, files.labels, models)
    return rep


def _say(res: "SegmentationResult", output: str, models: "Models") -> None:
    """The warnings on stderr; on stdout the volumes, the time, the device and what ran."""
    for w in res.warnings:
        print(f"{PROG}: warning: {w}", file=sys.stderr)
    v = res.volumes_ml
    print(f"{output}: WT {v['WT']:.1f} mL, TC {v['TC']:.1f} mL, ET {v['ET']:.1f} mL "
          f"(NCR {v['NCR']:.1f}, ED {v['ED']:.1f}); {res.timings['total']:.1f} s on {res.device} "
          f"with {models.description}")


def _read_reference(path: str, t1ce, series_uids: Optional[List[str]] = None) -> "sitk.Image":
    """Expert labels to compare the result with, checked before any work: labels, on the grid of
    the T1ce (a path, a DICOM series folder or an image)."""
    import SimpleITK as sitk

    from ..labels import detect_scheme
    from ..read.dicom_series import is_series_folder, parse_series_uids, read_series
    from ..read.images import read_image, same_grid

    img = read_image(path, "label")
    detect_scheme(sitk.GetArrayViewFromImage(img), path)
    if isinstance(t1ce, str) and is_series_folder(t1ce):
        t1ce = read_series(t1ce, *parse_series_uids(series_uids, SEQUENCES)["t1ce"]).image
    if t1ce is not None and not same_grid(img, t1ce if isinstance(t1ce, sitk.Image) else read_image(t1ce)):
        raise InputError(path, "is not on the grid of the T1ce image; cannot compare")
    return img


def _score_against(res, reference, path: str) -> dict:
    """Dice and HD95 per region of the result against expert labels on the same grid."""
    from ..evaluation.scoring import score_images
    from ..labels import REGIONS

    m = score_images(res.labels, reference, pred_scheme=res.label_scheme, pred_name="the result", ref_name=path)
    return {"labels": path, **{r: {"dice": m[r]["dice"], "hd95_mm": m[r]["hd95"]} for r in REGIONS}}


def _check_models(names: List[str], jobs: List[_Job]) -> None:
    """Each model's name or folder and its manifests (an ensemble's members' too), and that every
    case has the sequences the first needs (T1 and T2 may be left out): no weights are read."""
    from ..models import bundles, ensembles

    manifests = [bundles.read_manifest(f) for name in names for f in ensembles.members(name)]
    roles = manifests[0].in_sequences
    for job in jobs:
        missing = [r for r in roles if r not in job.inputs and r not in OPTIONAL_SEQUENCES]
        if missing:
            raise InputError(f"--{missing[0]}", f"the model {manifests[0].id} needs {sequences_needed(roles)}; "
                                                f"no {', '.join(missing)} given")


def _load_models(names: List[str], opts: "SegmentOptions") -> "Models":
    """The models, loaded once for every case."""
    from ..models.ensembles import load_ensemble
    from ..predict.devices import resolve  # torch: after every quick check

    resolve(opts.device)
    return load_ensemble(names)


def _say_notes(models: "Models") -> None:
    """Each model's research or demo note on stderr, named as asked for (an ensemble with its members)."""
    said = set()  # an ensemble's members often share their note
    for part in models.parts:
        who = part.id + (f" (ensemble of {', '.join(b.id for b in part.bundles)})" if part.ensemble else "")
        notes = [" is a DEMO trained on synthetic data only; not for clinical use"] if any(
            b.demo for b in part.bundles) else []
        notes += [f": {n}" for n in ([part.note] if part.note else [b.manifest.note for b in part.bundles]) if n]
        for note in notes:
            if note not in said:
                said.add(note)
                print(f"{PROG}: note: model {who}{note}", file=sys.stderr)


def cmd_segment(args: argparse.Namespace) -> int:
    """``braintumorseg segment``: one case, or a folder of cases with ``--cases``. Options, then the
    case's inputs, outputs and expert labels, then the models are checked, in that order, before
    any weights are read.

    Args:
        args: the command line parsed by the parser :func:`add_parser` filled.
    """
    from .. import extras
    from ..models.bundles import DEFAULT_MODEL

    _check_combination(args)
    opts = segment_options.SegmentOptions.from_args(args)
    for extra in opts.extras_needed():
        extras.require(extra)
    given = _given(args)
    names = args.model or [DEFAULT_MODEL]
    if args.cases:
        return _segment_batch(args, opts, names)
    job = _case_job(args, given)
    _check_job(job, args.series_uid)
    reference = (_read_reference(job.reference_labels, job.inputs.get("t1ce"), args.series_uid)
                 if job.reference_labels else None)
    _check_models(names, [job])
    models = _load_models(names, opts)
    _segment_one(job, reference, args, opts, models)
    _say_notes(models)  # after the result: a case whose voxels are refused gets its one error line alone
    return 0


def _check_combination(args: argparse.Namespace) -> None:
    """Options that make sense only together (empty values are refused for every command by ``main``)."""
    if args.skip_existing and not args.cases:
        raise InputError(None, "--skip-existing applies to --cases only")


def _segment_batch(args: argparse.Namespace, opts: "SegmentOptions", names: List[str]) -> int:
    """``--cases``: every case into the output folder, with summary.csv, index.html and batch.log
    (:mod:`batch`). Each case is checked before any model loads; one that fails is a failed case."""
    from .batch import Batch, BatchOptions

    _not_a_file(args.cases, "--cases", "a folder of case folders (for one case folder use --case)")
    if not os.path.isdir(args.output):
        raise InputError(args.output, "is not a folder; with --cases, -o names an existing folder for the results")
    if args.reference_labels:
        raise InputError("--reference-labels", "names one case's labels; with --cases each case's own "
                                               "<id>_seg file is used")
    batch = Batch(args.cases, args.output, BatchOptions(
        uncertainty=bool(args.uncertainty), report=bool(args.report), brain_mask=bool(args.brain_mask),
        dicom_seg=bool(args.dicom_seg), qc=True if args.qc else None, skip_existing=args.skip_existing,
        quiet=args.quiet))
    jobs: Dict[str, _Job] = {}
    refused: Dict[str, InputError] = {}
    for case in batch.cases:
        try:
            job = _Job(case.case_id, case.require(REQUIRED_SEQUENCES).sequences, batch.files(case), case.paths.get("seg"))
            _check_job(job, args.series_uid)
            jobs[case.case_id] = job
        except InputError as exc:  # recorded as the case's failure when its turn comes
            refused[case.case_id] = exc
    _check_models(names, list(jobs.values()))
    models = _load_models(names, opts) if jobs else None  # not when every case was refused
    if models is not None:
        _say_notes(models)
    return batch.run(_case_segmenter(jobs, refused, args, opts, models))


def _case_segmenter(jobs: Dict[str, _Job], refused: Dict[str, InputError], args: argparse.Namespace,
                    opts: "SegmentOptions", models: Optional["Models"]) -> Callable[["Case", "CaseFiles"], dict]:
    """What the batch calls for each case: its refusal, or its segmentation (the models' loading
    counted in the first case's timings)."""
    done: List[str] = []

    def segment_case(case: "Case", files: "CaseFiles") -> dict:
        if case.case_id in refused:
            raise refused[case.case_id]
        assert models is not None  # loaded since this case passed its checks
        first = not done
        done.append(case.case_id)
        return _segment_one(jobs[case.case_id], None, args, opts, models if first else models.reused())
    return segment_case


def add_parser(sub: "argparse._SubParsersAction") -> None:
    """The ``segment`` command's arguments: inputs, outputs, model, every option of
    :class:`SegmentOptions` (from its declaration), DICOM and batch review."""
    sg = sub.add_parser("segment", help="segment a case: necrotic core, edema, enhancing tumor on the T1ce grid")
    for r in SEQUENCES:
        sg.add_argument(f"--{r}", help=f"{r} volume, or a folder holding its DICOM series"
                                       + (" (may be left out: its channel is then empty)" if r in OPTIONAL_SEQUENCES else ""))
    sg.add_argument("--case", help="a case folder instead of the four: files named by role (BraTS layout, e.g. "
                                   "<id>_t1ce.nii.gz, or the role alone: t1ce.nii.gz), or subfolders t1/ t1ce/ t2/ "
                                   "flair/ each holding one DICOM series")
    sg.add_argument("--cases", help="a folder of such cases, each segmented (the models loaded once); -o is then an "
                                    "existing folder that gets <case>.nii.gz for each, and summary.csv, index.html "
                                    "(every case's QC picture) and batch.log; a failed case does not stop the "
                                    "others, and the exit status is then 1")
    sg.add_argument("-o", "--output", required=True, help="the label file to write (.nii.gz, .nrrd, ...): a file name, "
                                                          "never a folder (with --cases: the folder for the results)")
    sg.add_argument("--model", action="append", help="model name, bundle folder or ensemble folder; repeat for an "
                                                      "ensemble (default: the shipped default model)")
    segment_options.add_arguments(sg)  # every option of SegmentOptions, from its declaration
    sg.add_argument("--report", help="write a JSON report: model, device, timings, volumes, geometry")
    sg.add_argument("--quiet", action="store_true", help="no progress bar")
    sg.add_argument("--reference-labels", help="expert labels of the case: print Dice and HD95 of the result "
                                               "against them (and add them to the report)")
    _add_hospital_args(sg)
    sg.set_defaults(func=cmd_segment)


def _add_hospital_args(sg: argparse.ArgumentParser) -> None:
    """segment's DICOM input and output, QC pictures and batch review."""
    sg.add_argument("--series-uid", action="append", metavar="[ROLE=]UID",
                    help="the DICOM series to read from a folder holding several: UID for any folder, ROLE=UID "
                         "(e.g. t1ce=1.2.3) for one sequence's folder; repeat as needed")
    sg.add_argument("--dicom-seg", metavar="FILE", help="also write a DICOM SEG referencing the T1ce's series (the "
                                                        "T1ce given as a DICOM folder; the dicom extra); with --cases "
                                                        "any value: OUT/ID_seg.dcm for each case with a DICOM T1ce")
    sg.add_argument("--qc", metavar="PNG", help="also write a QC picture: slices with the labels, volumes, model "
                                                "(the qc extra, matplotlib); with --cases every case gets "
                                                "OUT/ID_qc.png whenever matplotlib is installed")
    sg.add_argument("--skip-existing", action="store_true",
                    help="with --cases: skip the cases whose files are all in the output folder already")
