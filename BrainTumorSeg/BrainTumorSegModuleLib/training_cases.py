"""Edited cases for training, fine-tuning on them, and registering the fine-tuned model: saving a
case writes the four sequences and the (edited) segmentation as a BraTS-layout case folder, all or
nothing; fine-tuning runs ``braintumorseg finetune`` in the background; the bundle it makes is
copied where the model list finds it."""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import List, Mapping, Optional

import numpy as np
import slicer
import vtk

from .errors import ModuleError
from .inputs import check_volumes, write_volumes
from .jobs import BackgroundJob, JobStarter
from .models import finetune_source
from .mrml import labelmap_node, node_ids, remove_nodes_added_since, voxels, write_volume
from .results import SEGMENTS
from .roles import ROLE_TITLES, ROLES


def _check_case_folder(folder: str, case_id: str) -> str:
    """The new case's folder ``folder/case_id``, once the name is usable and the folder free."""
    if not case_id or os.sep in case_id or "/" in case_id or case_id.startswith("."):
        raise ModuleError(f"{case_id!r} is not a usable case name")
    if not os.path.isdir(folder):
        raise ModuleError(f"{folder}: folder does not exist")
    dest = os.path.join(folder, case_id)
    if os.path.exists(dest):
        raise ModuleError(f"{dest}: exists already; choose another case name")
    return dest


def _segment_ids(seg) -> List[str]:
    """The segmentation's segment IDs in the order of SEGMENTS (found by name, else by key)."""
    segmentation = seg.GetSegmentation()
    ids = [segmentation.GetSegmentIdBySegmentName(title) or (key if segmentation.GetSegment(key) else "")
           for key, title, _, _ in SEGMENTS]
    if not all(ids):
        raise ModuleError("the segmentation needs the segments " + ", ".join(t for _, t, _, _ in SEGMENTS))
    return ids


def _labels(seg, ids: List[str], reference, scheme, scratch) -> np.ndarray:
    """The segments as a (k, j, i) label array on ``reference``'s grid, in ``scheme``'s values."""
    lab = slicer.vtkMRMLLabelMapVolumeNode()
    scratch.AddNode(lab)
    id_array = vtk.vtkStringArray()
    for i in ids:
        id_array.InsertNextValue(i)
    if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            seg, id_array, lab, reference, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY):
        raise ModuleError("could not export the segmentation to a label map")
    order = voxels(lab)  # 1, 2, 3 in the order of SEGMENTS
    out = np.zeros(order.shape, np.uint8)
    for n, (key, _, _, _) in enumerate(SEGMENTS, start=1):
        out[order == n] = scheme.class_value(key)
    return out


class TrainingCases:
    """Saving cases from ``scene`` and fine-tuning on them; ``start_job`` starts the background command."""

    def __init__(self, scene, start_job: JobStarter) -> None:
        self.scene = scene
        self.start_job = start_job

    def save_case(self, volumes: Mapping[str, Optional[object]], seg, folder: str, case_id: str,
                  label_scheme: str = "brats2021") -> str:
        """Write the four sequences and the (edited) segmentation as a BraTS-layout case folder
        ``folder/case_id`` in ``label_scheme`` (2021 names and labels 1/2/4, or 2023's -t1n... and
        1/2/3). Training needs all four sequences. Written into a temporary folder and renamed
        into place: all or nothing."""
        from BrainTumorSegLib.labels import get_scheme
        from BrainTumorSegLib.read.cases import case_file_name

        missing = [ROLE_TITLES[r] for r in ROLES if volumes.get(r) is None]
        if missing:
            raise ModuleError(f"a training case needs all four sequences; it has no {', '.join(missing)}")
        chosen = check_volumes(volumes, ROLES)
        dest = _check_case_folder(folder, case_id)
        ids = _segment_ids(seg)
        scheme = get_scheme(label_scheme)
        layout = "brats2023" if label_scheme == "brats2023" else "brats2021"
        scratch = slicer.vtkMRMLScene()
        before = node_ids(self.scene)
        tmp = tempfile.mkdtemp(prefix=f".{case_id}-", dir=folder)
        try:
            write_volumes(chosen, tmp, lambda role: case_file_name(case_id, role, layout))
            labels = _labels(seg, ids, chosen["t1ce"], scheme, scratch)
            write_volume(labelmap_node(labels, chosen["t1ce"], scratch),
                         os.path.join(tmp, case_file_name(case_id, "seg", layout)))
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            scratch.Clear(1)
            remove_nodes_added_since(self.scene, before)  # the export puts a colour table into the segmentation's scene
        return dest

    def start_finetune(self, model: str, data: str, out: str, epochs: int = 10, iters: int = 50,
                       device: str = "auto", freeze_encoder: bool = False, replay: Optional[str] = None,
                       extra: Optional[List[str]] = None) -> BackgroundJob:
        """``braintumorseg finetune`` on a folder of saved cases, in the background (from an
        ensemble's first member when ``model`` is an ensemble)."""
        if os.path.exists(out) and os.listdir(out):
            raise ModuleError(f"{out}: exists and is not empty; choose a new run folder")
        args = ["finetune", "--from", finetune_source(model), "--data", data, "--out", out, "--epochs", str(epochs),
                "--iters", str(iters), "--device", device]
        if freeze_encoder:
            args.append("--freeze-encoder")
        if replay:
            args += ["--replay", replay]
        return self.start_job(args + list(extra or []))

    @staticmethod
    def finish_finetune(job: BackgroundJob, out: str, name: Optional[str] = None) -> str:
        """Register the fine-tuned bundle where the model list finds it; returns its folder."""
        from BrainTumorSegLib.errors import InputError
        from BrainTumorSegLib.models import bundles

        code = job.poll()
        if code is None:
            raise ModuleError("fine-tuning is still running")
        if job.cancelled or code != 0:
            raise ModuleError("cancelled" if job.cancelled else job.error)
        models_dir = bundles.user_models_dir()
        os.makedirs(models_dir, exist_ok=True)
        base = name or os.path.basename(os.path.abspath(out))
        dest, n = os.path.join(models_dir, base), 1
        while os.path.exists(dest):
            n += 1
            dest = os.path.join(models_dir, f"{base}-{n}")
        tmp = tempfile.mkdtemp(prefix=".register-", dir=models_dir)
        try:
            shutil.copytree(os.path.join(out, bundles.RUN_BUNDLE), os.path.join(tmp, "model"))
            os.replace(os.path.join(tmp, "model"), dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        try:
            bundles.read_manifest(dest)  # the registered copy must read back (hash checked at load)
        except InputError as exc:
            raise ModuleError(str(exc)) from None
        return dest
