"""``segment --cases DIR -o OUT``: every case of a folder, one after another, into one folder.

A bad case never stops the batch: its one-line error is recorded, its files are removed, and the
next case goes on. The exit status is 1 when any case failed, else 0. One progress line per case
(done / total, case id, seconds, ETA) goes to stderr and, with a time stamp, to ``OUT/batch.log``.
After every case ``OUT/summary.csv`` and ``OUT/index.html`` (:mod:`batch_report`) are rewritten
atomically, so an interrupted batch leaves both describing what was done. With ``skip_existing``
a case whose files are all there is skipped, keeping what the earlier summary says of it.
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from .. import extras
from ..errors import Cancelled, InputError
from ..read.cases import REQUIRED_SEQUENCES, Case, find_cases
from ..read.dicom_series import is_series_folder
from ..write.batch_report import Row, file_name, read_summary, write_index, write_summary
from ..write.extra_outputs import CaseFiles

SegmentCase = Callable[[Case, CaseFiles], dict]   # segments one case, writes its files, returns its report
NO_DICOM_SEG = "no DICOM SEG: the T1ce is not a DICOM series"


@dataclass
class BatchOptions:
    uncertainty: bool = False
    report: bool = False
    brain_mask: bool = False
    dicom_seg: bool = False
    qc: Optional[bool] = None      # None: when matplotlib is installed
    skip_existing: bool = False
    quiet: bool = False


class ProgressLog:
    """One line per case on stderr (a failed case's even when quiet) and in ``OUT/batch.log``
    (appended, whole lines)."""

    def __init__(self, out_dir: str, total: int, quiet: bool) -> None:
        self.path = os.path.join(out_dir, "batch.log")
        self.total, self.done, self.quiet = total, 0, quiet
        self.spent: List[float] = []

    def line(self, text: str, detail: str = "", failed: bool = False) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n{detail}")
        if failed or not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def case(self, row: Row, detail: str = "") -> None:
        self.done += 1
        if row.status != "skipped" and row.seconds is not None:
            self.spent.append(row.seconds)
        left = self.total - self.done
        eta = _clock(left * sum(self.spent) / len(self.spent)) if self.spent else "unknown"
        what = {"done": f"done in {row.seconds or 0:.1f} s, WT {row.volumes_ml.get('WT', 0.0):.1f} mL",
                "skipped": "skipped: its files are there (--skip-existing)",
                "failed": f"FAILED after {row.seconds or 0:.1f} s: {row.error}"}[row.status]
        self.line(f"[{self.done}/{self.total}] {row.case}: {what}; ETA {eta}", detail, failed=row.status == "failed")


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _volumes_of(path: str) -> Dict[str, float]:
    """The volumes in mL of a label file written by an earlier run."""
    import SimpleITK as sitk

    from ..labels import detect_scheme
    from ..postprocess.volumes import volumes
    from ..read.images import read_image, voxel_volume_ml

    img = read_image(path, "label")
    arr = sitk.GetArrayViewFromImage(img)
    return volumes(arr, detect_scheme(arr, path).name, voxel_volume_ml(img))


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, InputError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'no message'}"[:300]


class Batch:
    """The cases of a folder and what to write for each, checked before any work."""

    def __init__(self, cases_dir: str, out_dir: str, options: BatchOptions) -> None:
        if not os.path.isdir(out_dir):
            raise InputError(out_dir, "output folder does not exist")
        self.cases: List[Case] = find_cases(cases_dir, keep_going=True)  # a case with two T1ce files fails alone
        if not self.cases:
            raise InputError(cases_dir, "holds no cases")
        self.out_dir, self.options, self.title = out_dir, options, f"braintumorseg batch: {cases_dir}"
        # subfolders a user may take for cases: said in the log, not silently passed over (a case's
        # own folder, or a DICOM series folder of a case held in cases_dir itself, is no such folder)
        used = {c.folder for c in self.cases} | {p for c in self.cases for p in c.paths.values()}
        self.ignored = sorted(f for f in os.listdir(cases_dir) if not f.startswith(".")
                              and os.path.isdir(os.path.join(cases_dir, f)) and os.path.join(cases_dir, f) not in used)
        if options.dicom_seg:
            extras.require("dicom")
            if not any(is_series_folder(c.paths.get("t1ce")) for c in self.cases):
                raise InputError(cases_dir, "no case has its T1ce as a DICOM series; a DICOM SEG needs one")
        if options.qc:
            extras.require("qc")
        self.qc = extras.available("qc") if options.qc is None else options.qc
        self.qc_note = "" if self.qc else ("No QC pictures: matplotlib is not installed "
                                           "(pip install \"BrainTumorSegLib[qc]\").")

    def files(self, case: Case) -> CaseFiles:
        def named(suffix: str, wanted: bool) -> Optional[str]:
            return os.path.join(self.out_dir, f"{case.case_id}{suffix}") if wanted else None

        o = self.options
        labels = os.path.join(self.out_dir, f"{case.case_id}.nii.gz")  # BraTS submission naming
        return CaseFiles(labels, named("_uncertainty.nii.gz", o.uncertainty),
                         named("_report.json", o.report), named("_brainmask.nii.gz", o.brain_mask),
                         named("_seg.dcm", o.dicom_seg and is_series_folder(case.paths.get("t1ce"))),
                         named("_qc.png", bool(self.qc)))

    def run(self, segment_case: SegmentCase) -> int:
        """Segment every case; 1 when any failed, else 0."""
        log = ProgressLog(self.out_dir, len(self.cases), self.options.quiet)
        log.line(f"batch of {len(self.cases)} cases into {self.out_dir}")
        if self.ignored:
            log.line(f"not cases (no files named by role): {', '.join(self.ignored)}")
        earlier = read_summary(os.path.join(self.out_dir, "summary.csv")) if self.options.skip_existing else {}
        rows: List[Row] = []
        for case in self.cases:
            files = self.files(case)
            if self.options.skip_existing and all(os.path.exists(p) for p in files.paths()):
                row = self._skipped(case, files, earlier.get(case.case_id))
                detail = ""
            else:
                row, detail = self._segment(case, files, segment_case)
            rows.append(row)
            self._record(rows)
            log.case(row, detail)
        failed = sum(r.status == "failed" for r in rows)
        print(f"batch: {len(rows) - failed} of {len(rows)} cases segmented or skipped, {failed} failed; "
              f"{os.path.join(self.out_dir, 'summary.csv')}, {os.path.join(self.out_dir, 'index.html')}")
        return 1 if failed else 0

    def _segment(self, case: Case, files: CaseFiles, segment_case: SegmentCase):
        existed = {p for p in files.paths() if os.path.exists(p)}
        t0 = time.perf_counter()
        try:
            report = segment_case(case.require(REQUIRED_SEQUENCES), files)
        except (Cancelled, KeyboardInterrupt):
            raise
        except Exception as exc:  # one bad case never stops the batch
            for p in set(files.paths()) - existed:
                if os.path.exists(p):
                    os.unlink(p)
            detail = "" if isinstance(exc, InputError) else "".join("    " + ln for ln in traceback.format_exc().splitlines(True))
            return Row(case.case_id, "failed", seconds=time.perf_counter() - t0, error=_one_line(exc)), detail
        return self._row(case, files, report, time.perf_counter() - t0), ""

    def _row(self, case: Case, files: CaseFiles, report: dict, seconds: float) -> Row:
        from ..write.dicom_seg import algorithm_of

        warnings = list(report.get("warnings", []))
        if self.options.dicom_seg and not files.dicom_seg:
            warnings.append(NO_DICOM_SEG)
        against = report.get("against_reference") or {}
        return Row(case.case_id, "done", dict(report.get("volumes_ml", {})),
                   {r: against[r]["dice"] for r in ("WT", "TC", "ET") if r in against},
                   algorithm_of(report.get("models", []), report.get("ensembles", [])).name, seconds, warnings,
                   files=self._names(files))

    def _skipped(self, case: Case, files: CaseFiles, before: Optional[Row]) -> Row:
        if before is None or before.status == "failed":  # no earlier record: the volumes from its labels
            before = Row(case.case_id, "skipped", _volumes_of(files.labels))
        before.status, before.files = "skipped", self._names(files)
        return before

    @staticmethod
    def _names(files: CaseFiles) -> Dict[str, str]:
        return {k: file_name(p) for k, p in (("labels", files.labels), ("qc_picture", files.qc),
                                             ("dicom_seg", files.dicom_seg)) if p}

    def _record(self, rows: List[Row]) -> None:
        write_summary(rows, os.path.join(self.out_dir, "summary.csv"))
        write_index(rows, os.path.join(self.out_dir, "index.html"), self.title, self.qc_note)
