"""A finished segmentation's files into the scene, all or nothing: a segmentation node with three
named segments, a volumes table, and the uncertainty volume and brain mask when asked for.

Temporary nodes live in a scratch scene; the nodes made in the user's scene are removed again if
anything fails half-way, and an output segmentation is overwritten only as the very last step.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, Mapping, Optional

import numpy as np
import slicer
import vtk

from BrainTumorSegLib.write import terminology as _terms  # standard library only: importable before the dependencies

from .errors import ModuleError
from .mrml import RESULT_ATTRIBUTE, ijk_to_ras, labelmap_node, node_ids, read_volume, remove_nodes_added_since, voxels
from .roles import ROLE_TITLES, ROLES, left_out

if TYPE_CHECKING:
    from .segmentation import SegmentationRun

# key (segment ID), name shown, colour, standard terminology (Slicer's serialised entry): the library's
# segments, so that the DICOM SEG and the QC pictures of the command line name and colour them alike
SEGMENTS = tuple((s.key, s.title, s.colour, _terms.slicer_terminology_entry(s)) for s in _terms.SEGMENTS)
REGION_ROWS = (("NCR", "Necrotic tumor core (label)"), ("ED", "Peritumoral edema (label)"),
               ("ET", "Enhancing tumor (label, region)"), ("TC", "Tumor core = NCR + ET (region)"),
               ("WT", "Whole tumor = NCR + ED + ET (region)"))


@dataclass
class SegmentationResult:
    """What a run added to the scene, with the library's report."""

    segmentation: object
    table: object
    uncertainty: Optional[object]
    report: Dict
    seconds: float
    volumes: Dict[str, object] = field(default_factory=dict)  # the run's inputs (Edit uses its T1ce)
    brain_mask: Optional[object] = None                        # label map node, when asked for

    def gone(self) -> Optional[str]:
        """What Edit and Save need that was removed from the scene since (one line), else None: the
        segmentation or a volume the run was given (a volume not given is not gone)."""
        needed = [("segmentation", self.segmentation)] + [(ROLE_TITLES[r], n) for r, n in self.volumes.items()]
        for what, node in needed:
            if node is None or node.GetScene() is None:
                return f"the result's {what} is no longer in the scene; segment again"
        return None

    def status(self) -> str:
        """The status: a line with time, device, model and the sequences left out, then a line for
        each warning of the report (partial coverage, a missing sequence, a tumor without enhancement...)."""
        models = model_names(self.report)
        missing = left_out(self.volumes) if self.volumes else []
        first = (f"Segmented in {self.seconds:.1f} s on {self.report.get('device', '?')} with {models}"
                 + (f" (without {' and '.join(missing)})" if missing else ""))
        return "\n".join([first] + [f"Warning: {w}" for w in self.report.get("warnings", [])])


def model_names(report: Mapping) -> str:
    """The model (or the models, for several) a report says made the result."""
    return report.get("model") or ", ".join(m.get("id", "?") for m in report.get("models", []))


def place_beside(scene, reference, nodes) -> None:
    """Put ``nodes`` in the subject hierarchy where ``reference`` is (its study, for a volume loaded
    from DICOM), where Slicer's DICOM SEG export looks for the series a segmentation belongs to."""
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    parent = sh.GetItemParent(sh.GetItemByDataNode(reference)) if sh is not None else 0
    if not parent or parent == sh.GetSceneItemID():
        return
    for node in nodes:
        item = sh.GetItemByDataNode(node)
        if item:
            sh.SetItemParent(item, parent)
        else:  # Slicer's subject hierarchy logic gives every new node an item; bare MRML does not
            sh.CreateItem(parent, node)


# what a result's segmentation node records (saved with the scene), so that Edit and Save work on
# it after the scene is saved and loaded again or the module reloaded
_SCHEME, _MODEL, _GIVEN = "BrainTumorSeg.LabelScheme", "BrainTumorSeg.Model", "BrainTumorSeg.Sequences"
_REFERENCES = (*ROLES, "table", "uncertainty", "brain_mask")


def _record(result: SegmentationResult) -> None:
    seg = result.segmentation
    seg.SetAttribute(_SCHEME, result.report["label_scheme"])
    seg.SetAttribute(_MODEL, model_names(result.report))
    seg.SetAttribute(_GIVEN, ",".join(r for r in ROLES if result.volumes.get(r) is not None))
    nodes = dict(result.volumes, table=result.table, uncertainty=result.uncertainty, brain_mask=result.brain_mask)
    for key in _REFERENCES:
        seg.SetNodeReferenceID(f"BrainTumorSeg.{key}", nodes[key].GetID() if nodes.get(key) is not None else None)


def recorded_result(seg) -> Optional[SegmentationResult]:
    """The result a segmentation node records (see :func:`_record`), with the nodes still in its
    scene (a volume the run was given and that was deleted since is None: :meth:`SegmentationResult.gone`
    says so); None for a node the module did not make, or whose T1ce is gone."""
    if seg is None or seg.GetScene() is None or not seg.GetAttribute(_SCHEME):
        return None
    nodes = {key: seg.GetNodeReference(f"BrainTumorSeg.{key}") for key in _REFERENCES}
    if nodes["t1ce"] is None:
        return None
    given = (seg.GetAttribute(_GIVEN) or "").split(",")
    report = {"label_scheme": seg.GetAttribute(_SCHEME), "model": seg.GetAttribute(_MODEL) or "", "warnings": []}
    return SegmentationResult(seg, nodes["table"], nodes["uncertainty"], report, 0.0,
                              {r: nodes[r] for r in ROLES if r in given or nodes[r] is not None}, nodes["brain_mask"])


def set_terminology(segment, entry: str) -> None:
    """Tag ``segment`` with a serialised terminology entry: ``SetTerminology`` from Slicer 5.10,
    the ``TerminologyEntry`` tag before (same string)."""
    if hasattr(segment, "SetTerminology"):
        segment.SetTerminology(entry)
    else:
        segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), entry)


def set_segment_mask(seg, key: str, mask: np.ndarray, geometry_node, scratch=None) -> None:
    """Replace segment ``key``'s voxels by a (k, j, i) 0/1 mask on ``geometry_node``'s grid."""
    tmp = labelmap_node(mask, geometry_node, scratch or slicer.vtkMRMLScene())
    oriented = slicer.vtkSlicerSegmentationsModuleLogic.CreateOrientedImageDataFromVolumeNode(tmp)
    oriented.UnRegister(None)  # a new object the caller owns: Python's reference is then the only one
    if not slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(oriented, seg, key):
        raise ModuleError(f"could not fill segment {key}")


def fill_volume_table(table, volumes_ml: Mapping[str, float]) -> None:
    """The report's volumes (mL) as the table's rows, in the order of REGION_ROWS."""
    names, values = vtk.vtkStringArray(), vtk.vtkDoubleArray()
    names.SetName("Structure")
    values.SetName("Volume (mL)")
    for key, title in REGION_ROWS:
        if key in volumes_ml:
            names.InsertNextValue(title)
            values.InsertNextValue(round(float(volumes_ml[key]), 2))
    table.AddColumn(names)
    table.AddColumn(values)


class ResultLoader:
    """Adds a finished run's result to ``scene`` in one step (see the module's docstring)."""

    def __init__(self, scene) -> None:
        self.scene = scene

    def load(self, run: "SegmentationRun", report: Dict) -> SegmentationResult:
        """The run's files (``labels.nrrd`` and, when asked for, ``uncertainty.nrrd`` and
        ``brainmask.nrrd`` in its folder) into the scene; nothing is left of them on failure."""
        from BrainTumorSegLib.labels import get_scheme

        scheme = get_scheme(report["label_scheme"])
        reference = run.volumes["t1ce"]
        scratch = slicer.vtkMRMLScene()  # temporary nodes never enter the user's scene
        labels_node = slicer.vtkMRMLLabelMapVolumeNode()
        scratch.AddNode(labels_node)
        read_volume(os.path.join(run.workdir, "labels.nrrd"), labels_node)
        if not np.allclose(ijk_to_ras(labels_node), ijk_to_ras(reference), atol=1e-3) or \
                labels_node.GetImageData().GetDimensions() != reference.GetImageData().GetDimensions():
            raise ModuleError("the result is not on the T1ce grid")  # the CLI guarantees it; never load a shifted result
        labels = voxels(labels_node)
        before = node_ids(self.scene)
        self.scene.StartState(self.scene.BatchProcessState)
        try:
            seg = self._segmentation_with_result(run, reference, labels, scheme, labels_node, scratch,
                                                 model_names(report))
            table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{run.name} volumes")
            fill_volume_table(table, report.get("volumes_ml", {}))
            unc = self._volume(run, run.uncertainty, "vtkMRMLScalarVolumeNode", "uncertainty", "uncertainty.nrrd")
            mask = self._volume(run, run.brain_mask, "vtkMRMLLabelMapVolumeNode", "brain mask", "brainmask.nrrd")
            if run.output is not None:  # last: nothing after it can fail and leave the output half-changed
                seg = self._overwrite(run.output, seg, reference)
        except Exception:  # every node made here goes (display and storage nodes included)
            remove_nodes_added_since(self.scene, before)
            raise
        finally:
            self.scene.EndState(self.scene.BatchProcessState)
            scratch.Clear(1)
        # after the batch, when the new nodes have their items; an output the user chose stays where it is
        place_beside(self.scene, reference, [n for n in (seg if run.output is None else None, table, unc, mask) if n])
        result = SegmentationResult(seg, table, unc, report, time.perf_counter() - run.started, dict(run.volumes), mask)
        _record(result)
        return result

    def _volume(self, run: "SegmentationRun", wanted: bool, node_class: str, what: str, file_name: str):
        """A volume node ``<run name> <what>`` read from the run's ``file_name``, when ``wanted``."""
        if not wanted:
            return None
        node = self.scene.AddNewNodeByClass(node_class, f"{run.name} {what}")
        read_volume(os.path.join(run.workdir, file_name), node)
        node.SetAttribute(RESULT_ATTRIBUTE, what)
        node.CreateDefaultDisplayNodes()
        return node

    def _segmentation_with_result(self, run: "SegmentationRun", reference, labels: np.ndarray, scheme,
                                  labels_node, scratch, model: str):
        """A segmentation node with the three segments: in the user's scene, or in the scratch scene
        when it is to replace ``run.output``'s segments (see :meth:`_overwrite`). Each segment keeps
        its name and colour when a terminology is chosen in Segment Editor, and says it was made
        automatically by ``model`` (what a DICOM SEG export writes; editing it then makes it
        semi-automatic)."""
        target = run.output
        if target is not None and self.scene.GetNodeByID(target.GetID()) is not target:
            raise ModuleError("the output segmentation is no longer in the scene")
        seg = (scratch if target is not None else self.scene).AddNewNodeByClass("vtkMRMLSegmentationNode", run.name)
        if target is None:
            seg.CreateDefaultDisplayNodes()
        seg.SetReferenceImageGeometryParameterFromVolumeNode(reference)
        for key, title, colour, terminology in SEGMENTS:
            segmentation = seg.GetSegmentation()
            segmentation.AddEmptySegment(key, title, colour)
            segment = segmentation.GetSegment(key)
            segment.SetNameAutoGenerated(False)
            segment.SetColorAutoGenerated(False)
            segment.SetTag("DICOM.SegmentAlgorithmType", "AUTOMATIC")
            segment.SetTag("DICOM.SegmentAlgorithmName", model[:64])  # a DICOM LO
            set_terminology(segment, terminology)
            set_segment_mask(seg, key, (labels == scheme.class_value(key)).astype(np.uint8), labels_node, scratch)
        return seg

    @staticmethod
    def _overwrite(target, seg, reference):
        """``target``'s segments replaced by ``seg``'s in one copy: the last step of adding a result."""
        target.GetSegmentation().DeepCopy(seg.GetSegmentation())
        target.SetReferenceImageGeometryParameterFromVolumeNode(reference)
        if target.GetDisplayNode() is None:
            target.CreateDefaultDisplayNodes()
        return target
