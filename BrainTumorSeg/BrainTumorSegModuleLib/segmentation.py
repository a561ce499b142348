"""A segmentation in the background: the chosen volumes to a private folder, ``braintumorseg
segment`` on them as a :class:`~.jobs.BackgroundJob`, and its result into the scene (all or
nothing, :mod:`.results`). Cancel and failure leave the scene as it was; the private folder is
removed whatever happens.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Mapping, Optional

from .errors import ModuleError
from .inputs import Volumes, check_volumes, write_volumes
from .jobs import BackgroundJob, JobStarter
from .parameters import segment_options
from .results import ResultLoader, SegmentationResult, recorded_result
from .roles import ROLE_TITLES


@dataclass
class SegmentationRun:
    """A segmentation in progress: the background job and what its result belongs to."""

    job: BackgroundJob
    workdir: str
    volumes: Dict[str, object]        # the given volumes by role (T1 or T2 may be missing)
    name: str
    uncertainty: bool
    brain_mask: bool = False
    output: Optional[object] = None   # a segmentation node to overwrite, else a new one
    started: float = field(default_factory=time.perf_counter)

    @property
    def stage(self) -> str:
        return self.job.stage

    @property
    def fraction(self) -> float:
        return self.job.fraction

    def poll(self) -> Optional[int]:
        return self.job.poll()

    def named(self, text: str) -> str:
        """``text`` (the command's error or a warning) with each input's temporary file named as the
        user knows it: the volume's name and its sequence."""
        for role, node in self.volumes.items():
            text = text.replace(os.path.join(self.workdir, f"{role}.nrrd"), f"{node.GetName()} ({ROLE_TITLES[role]})")
        return text


def _one_line_failure(exc: Exception) -> ModuleError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return ModuleError(f"the result could not be added to the scene ({type(exc).__name__}"
                       f"{': ' + detail if detail else ''})")


class Segmentation:
    """Runs segmentations for ``scene``; ``start_job`` starts the background command (tests give
    their own)."""

    def __init__(self, scene, start_job: JobStarter) -> None:
        self.scene = scene
        self.start_job = start_job
        self.loader = ResultLoader(scene)

    def start(self, volumes: Volumes, model: Optional[str] = None, name: Optional[str] = None,
              clinical: bool = True, output=None, **options) -> SegmentationRun:
        """Write the given volumes to a private folder and start ``braintumorseg segment`` on them.

        ``volumes``: role -> node; the T1ce and the FLAIR are needed, a T1 or T2 that is None is
        left out (the library leaves its channel empty). ``options``: any of the library's
        segmentation options (``segment_options.SegmentOptions``: device, tta, uncertainty,
        min_et_voxels, brain_mask...), checked before anything is written. ``clinical``: skull
        stripping, co-registration and working resolution decided by the library (its defaults);
        off treats the volumes as BraTS-preprocessed. ``brain_mask``: add the brain mask (HD-BET's
        when stripped) to the scene as a label map. ``output``: a segmentation node whose segments
        the result replaces (default: a new node)."""
        opts = segment_options(clinical, **options)
        chosen = check_volumes(volumes)
        if output is not None and output.GetParentTransformNode() is not None:
            raise ModuleError(f"{output.GetName()} (the output segmentation) is under a transform; harden it first "
                              "or choose another output")
        workdir = tempfile.mkdtemp(prefix="BrainTumorSeg-")
        try:
            args = ["segment"]
            for r, path in write_volumes(chosen, workdir).items():
                args += [f"--{r}", path]
            args += ["-o", os.path.join(workdir, "labels.nrrd"), "--report", os.path.join(workdir, "report.json")]
            if model:
                args += ["--model", model]
            args += opts.to_argv({"uncertainty": os.path.join(workdir, "uncertainty.nrrd"),
                                  "brain_mask": os.path.join(workdir, "brainmask.nrrd")})
            job = self.start_job(args)
        except Exception:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        name = name or f"{chosen['t1ce'].GetName()} tumor"
        return SegmentationRun(job, workdir, chosen, name, opts.uncertainty, opts.brain_mask, output)

    @staticmethod
    def recorded(seg) -> Optional[SegmentationResult]:
        """The result a segmentation node made by :meth:`finish` records (after the scene was saved
        and loaded again, or the module reloaded), else None; its time and warnings are not kept."""
        return recorded_result(seg)

    @staticmethod
    def cancel(run: SegmentationRun) -> None:
        """Stop the run; the scene is not touched and the temporary files are removed."""
        try:
            run.job.cancel()
        finally:
            shutil.rmtree(run.workdir, ignore_errors=True)

    def finish(self, run: SegmentationRun) -> SegmentationResult:
        """After the job ended: its result into the scene (all or nothing), or a ModuleError."""
        try:
            code = run.job.poll()
            if code is None:
                raise ModuleError("the segmentation is still running")
            if run.job.cancelled:
                raise ModuleError("cancelled")
            if code != 0:
                raise ModuleError(run.named(run.job.error))
            with open(os.path.join(run.workdir, "report.json"), encoding="utf-8") as f:
                report = json.load(f)
            report["warnings"] = [run.named(w) for w in report.get("warnings", [])]
            return self.loader.load(run, report)
        except ModuleError:
            raise
        except Exception as exc:  # whatever went wrong, the user gets one line; the loader undid its nodes
            raise _one_line_failure(exc) from exc
        finally:
            shutil.rmtree(run.workdir, ignore_errors=True)

    def segment(self, volumes: Mapping[str, Optional[object]], progress: Optional[Callable[[str, float], None]] = None,
                should_cancel: Optional[Callable[[], bool]] = None, **options) -> SegmentationResult:
        """Blocking convenience (scripts, tests, the self-test): start, wait, finish."""
        run = self.start(volumes, **options)
        while run.poll() is None:
            if should_cancel is not None and should_cancel():
                self.cancel(run)
                raise ModuleError("cancelled")
            if progress is not None:
                progress(run.stage, run.fraction)
            time.sleep(0.1)
        return self.finish(run)
