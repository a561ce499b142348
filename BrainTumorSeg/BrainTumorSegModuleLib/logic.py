"""The module's MRML work, without Qt: volumes to files, a background ``braintumorseg`` run, its
result into a segmentation node with three named segments, a volumes table and an optional
uncertainty volume; saving an edited case for training; fine-tuning and registering the model.

Everything is added to the scene only after the run succeeded, in one step; on any failure the
nodes made so far are removed again, so the scene is never left half-filled. Temporary files live
in a private folder that is removed whatever happens.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from BrainTumorSegLib import terminology as _terms  # standard library only: importable before the dependencies
from BrainTumorSegLib.errors import InputError  # the package's __init__ put the library on sys.path
from BrainTumorSegLib.segment_options import SegmentOptions, defaults, help_text, specs  # noqa: F401 - help_text: the widget's

from .jobs import Job
from .roles import ROLE_TITLES, ROLES, assign

# key (segment ID), name shown, colour, standard terminology (Slicer's serialised entry): the library's
# segments, so that the DICOM SEG and the QC pictures of the command line name and colour them alike
SEGMENTS = tuple((s.key, s.title, s.colour, _terms.slicer_terminology_entry(s)) for s in _terms.SEGMENTS)
MODULE_NAME = "BrainTumorSeg"
# the segmentation options the module offers (declared, with defaults and ranges, in the library)
MODULE_OPTIONS = ("device", "tta", "uncertainty", "min_et_voxels", "brain_mask")
# the choices a parameter node keeps with the scene, with their defaults (JSON values)
CHOICES = {"model": None, "clinical": True, **{k: defaults()[k] for k in MODULE_OPTIONS}}
# "Clinical scans: automatic" off: the volumes are taken as BraTS-preprocessed
NOT_CLINICAL = {"skull_strip": "never", "register": "never", "isotropic": "off"}
REGION_ROWS = (("NCR", "Necrotic tumor core (label)"), ("ED", "Peritumoral edema (label)"),
               ("ET", "Enhancing tumor (label, region)"), ("TC", "Tumor core = NCR + ET (region)"),
               ("WT", "Whole tumor = NCR + ED + ET (region)"))


class ModuleError(Exception):
    """A problem to show in the module as one line (no traceback)."""


def _section(mapping, key: str) -> Dict:
    value = mapping.get(key) if isinstance(mapping, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def model_tooltip(manifest: Mapping) -> str:
    """What the model list shows for a bundle: description, label scheme, validation figures.
    Never fails on a manifest written by hand (missing or odd fields are left out)."""
    lines = [str(manifest.get("description") or manifest.get("id", "?"))]
    from BrainTumorSegLib import bundles

    names = bundles.member_names(manifest)
    network = f"ensemble of {', '.join(names)}" if names else manifest.get("network", "?")
    lines.append(f"Label scheme: {manifest.get('label_scheme', '?')}; network: {network}")
    validation = _section(_section(manifest, "metrics"), "validation_segment")
    val = _section(validation, "mean")
    keys = ("dice_WT", "dice_TC", "dice_ET", "hd95_WT")
    if all(isinstance(val.get(k), (int, float)) for k in keys):
        n = len(validation.get("cases") or [])
        lines.append(f"Validation ({n} held-out cases): Dice WT {val['dice_WT']:.2f}, TC {val['dice_TC']:.2f}, "
                     f"ET {val['dice_ET']:.2f}; HD95 WT {val['hd95_WT']:.1f} mm")
    if manifest.get("demo"):
        lines.append("A demo trained on synthetic phantoms: not for real patients.")
    if manifest.get("error"):
        lines.append(f"Unusable: {manifest['error']}")
    return "\n".join(lines)


def segment_options(clinical: bool = True, **options) -> SegmentOptions:
    """A run's options, checked by the library's declaration: an unknown option or a bad value is a
    ModuleError naming it. ``clinical`` off adds :data:`NOT_CLINICAL`."""
    unknown = sorted(set(options) - set(specs()))
    if unknown:
        raise ModuleError(f"unknown option {unknown[0]!r}")
    try:
        return SegmentOptions(**{**options, **({} if clinical else NOT_CLINICAL)})
    except InputError as exc:
        raise ModuleError(str(exc)) from None


def spin_box_range(name: str) -> Tuple[int, int]:
    """An integer option's spin box range: its declared range, from one below it where the option
    may be left to the model (that value, shown as the spin box's special text, stands for None)."""
    spec = specs()[name]
    return int(spec.low or 0) - (1 if spec.nullable else 0), int(spec.high or 0)


def from_spin_box(name: str, value: int) -> Optional[int]:
    """The option's value for a spin box's value (None: the model's own)."""
    spec = specs()[name]
    return None if spec.nullable and value < (spec.low or 0) else int(value)


def to_spin_box(name: str, value: Optional[int]) -> int:
    """The spin box's value for an option's value."""
    return spin_box_range(name)[0] if value is None else int(value)


def set_terminology(segment, entry: str) -> None:
    """Tag ``segment`` with a serialised terminology entry: ``SetTerminology`` from Slicer 5.10,
    the ``TerminologyEntry`` tag before (same string)."""
    if hasattr(segment, "SetTerminology"):
        segment.SetTerminology(entry)
    else:
        segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), entry)


def _register_converter_rules() -> None:
    """Slicer registers these at start-up; plain ``slicer-core`` does not."""
    fac = slicer.vtkSegmentationConverterFactory.GetInstance()
    labelmap = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    if fac.ConstructRepresentationObjectByRepresentation(labelmap) is None:
        fac.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
        fac.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())


def _read_volume(path: str, node) -> None:
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(path)
    if not storage.ReadData(node):
        raise ModuleError(f"{path}: could not be read")


def _write_volume(node, path: str) -> None:
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(path)
    storage.SetUseCompression(path.endswith(".gz"))
    if not storage.WriteData(node):
        raise ModuleError(f"{path}: could not write volume {node.GetName()}")


def voxels(node) -> np.ndarray:
    """A volume node's voxels as a (k, j, i) array (a copy)."""
    img = node.GetImageData()
    dims = img.GetDimensions()
    return numpy_support.vtk_to_numpy(img.GetPointData().GetScalars()).reshape(dims[::-1]).copy()


def labelmap_node(array: np.ndarray, geometry_node, scene):
    """A label map node in ``scene`` holding a (k, j, i) uint8 array on ``geometry_node``'s grid
    (the inverse of :func:`voxels`)."""
    node = slicer.vtkMRMLLabelMapVolumeNode()
    scene.AddNode(node)
    node.CopyOrientation(geometry_node)
    img = vtk.vtkImageData()
    img.SetDimensions(array.shape[::-1])
    img.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(array, np.uint8).ravel(),
                                                             deep=True, array_type=vtk.VTK_UNSIGNED_CHAR))
    node.SetAndObserveImageData(img)
    return node


def ijk_to_ras(node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


@dataclass
class SegmentationRun:
    """A segmentation in progress: the background job and what its result belongs to."""
    job: Job
    workdir: str
    volumes: Dict[str, object]
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


@dataclass
class SegmentationResult:
    segmentation: object
    table: object
    uncertainty: Optional[object]
    report: Dict
    seconds: float
    volumes: Dict[str, object] = field(default_factory=dict)  # the run's inputs (Edit uses its T1ce)
    brain_mask: Optional[object] = None                        # label map node, when asked for

    def status(self) -> str:
        models = self.report.get("model") or ", ".join(m.get("id", "?") for m in self.report.get("models", []))
        return f"Segmented in {self.seconds:.1f} s on {self.report.get('device', '?')} with {models}"


class BrainTumorSegLogic:
    """MRML side of the module; ``scene`` is Slicer's scene (or any ``vtkMRMLScene`` in tests)."""

    def __init__(self, scene, python: Optional[str] = None) -> None:
        self.scene = scene
        self.python = python
        _register_converter_rules()

    # ------------------------------------------------------------------ choosing inputs

    def scalar_volumes(self) -> List[object]:
        nodes = [self.scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
                 for i in range(self.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))]
        return [n for n in nodes if not n.IsA("vtkMRMLLabelMapVolumeNode")]

    def assign_volumes(self, nodes: Optional[List[object]] = None):
        """Guess each sequence's volume from the node names: ({role: node or None}, notes)."""
        nodes = self.scalar_volumes() if nodes is None else nodes
        idx, notes = assign([n.GetName() for n in nodes])
        return {r: (nodes[i] if i is not None else None) for r, i in idx.items()}, notes

    @staticmethod
    def models() -> List[Dict]:
        """Installed model bundles and ensembles (manifests; torch is not loaded), the default first
        (the model list selects the first)."""
        from BrainTumorSegLib import bundles

        return sorted(bundles.installed(), key=lambda m: m["name"] != bundles.DEFAULT_MODEL)

    @staticmethod
    def models_in(folders: List[str]) -> List[Dict]:
        """Manifests of bundle folders loaded by hand earlier; folders that are gone are skipped."""
        from BrainTumorSegLib import bundles
        from BrainTumorSegLib.errors import InputError

        found = []
        for folder in folders:
            try:
                m = bundles.describe(folder)
            except InputError:
                continue
            found.append(dict(m, path=folder, name=os.path.basename(os.path.normpath(folder))))
        return found

    @staticmethod
    def finetune_source(model: str) -> str:
        """The bundle fine-tuning starts from: the model, or an ensemble's first member (fine-tuning
        trains one network)."""
        from BrainTumorSegLib import bundles
        from BrainTumorSegLib.errors import InputError

        try:
            return bundles.members(model)[0]
        except InputError as exc:
            raise ModuleError(str(exc)) from None

    def start_device_query(self) -> Job:
        """Ask the library's Python which devices torch sees (in the background: importing torch
        and probing CUDA can take seconds)."""
        return Job(["devices", "--json"], self.python)

    @staticmethod
    def devices_from(job: Job) -> Tuple[List[str], str]:
        """(devices such as cpu, cuda:0, mps; one line on the hardware) from a finished query."""
        if job.poll() != 0:
            raise ModuleError(job.error)
        info = json.loads(job.stdout[-1])
        return list(info["available"]), str(info["description"])

    def _check_volumes(self, volumes: Mapping[str, object]) -> None:
        missing = [ROLE_TITLES[r] for r in ROLES if volumes.get(r) is None]
        if missing:
            raise ModuleError(f"choose a volume for {', '.join(missing)}")
        ids = [volumes[r].GetID() for r in ROLES]
        if len(set(ids)) < 4:
            raise ModuleError("the same volume is chosen for two sequences")
        for r in ROLES:
            n = volumes[r]
            if n.GetImageData() is None:
                raise ModuleError(f"{n.GetName()} ({ROLE_TITLES[r]}) has no voxels")
            if n.GetParentTransformNode() is not None:
                raise ModuleError(f"{n.GetName()} ({ROLE_TITLES[r]}) is under a transform; harden it first")

    # ------------------------------------------------------------------ segmenting

    def needs_skull_stripping(self, volumes: Mapping[str, object]) -> bool:
        """Whether any of the volumes still looks like a head (the library's own check), so that
        segmenting it with clinical handling on needs HD-BET (the ``clinical`` extra)."""
        from BrainTumorSegLib.imageio import voxel_volume_ml
        from BrainTumorSegLib.skullstrip import check_stripped_array

        self._check_volumes(volumes)
        return not all(check_stripped_array(voxels(volumes[r]), voxel_volume_ml(volumes[r])).stripped for r in ROLES)

    # ------------------------------------------------------------------ choices kept with the scene

    def parameter_node(self):
        """The module's parameter node (one per scene, saved with it), made on first use."""
        node = self.scene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag(MODULE_NAME)
            node.SetName(MODULE_NAME)
            node.SetAttribute("ModuleName", MODULE_NAME)
            self.scene.AddNode(node)
        return node

    def save_choices(self, choices: Mapping[str, object], volumes: Mapping[str, object], output=None) -> None:
        """Options (keys of ``CHOICES``), the four input volumes and the output segmentation."""
        node = self.parameter_node()
        for key, value in choices.items():
            if key not in CHOICES:
                raise ModuleError(f"unknown choice {key!r}")
            node.SetParameter(key, json.dumps(value))
        for r in ROLES:
            v = volumes.get(r)
            node.SetNodeReferenceID(f"input_{r}", v.GetID() if v is not None else None)
        node.SetNodeReferenceID("output", output.GetID() if output is not None else None)

    def load_choices(self) -> Tuple[Dict[str, object], Dict[str, object], Optional[object]]:
        """What :meth:`save_choices` kept (defaults where nothing or something unreadable is stored)."""
        node = self.parameter_node()
        choices = dict(CHOICES)
        for key in CHOICES:
            text = node.GetParameter(key)
            if text:
                try:
                    choices[key] = json.loads(text)
                except ValueError:
                    pass  # a hand-edited scene: keep the default
        volumes = {r: node.GetNodeReference(f"input_{r}") for r in ROLES}
        return choices, volumes, node.GetNodeReference("output")

    # ------------------------------------------------------------------ segmenting (continued)

    def start_segmentation(self, volumes: Mapping[str, object], model: Optional[str] = None,
                           name: Optional[str] = None, clinical: bool = True, output=None,
                           **options) -> SegmentationRun:
        """Write the four volumes to a private folder and start ``braintumorseg segment`` on them.

        ``options``: any of the library's segmentation options (``segment_options.SegmentOptions``:
        device, tta, uncertainty, min_et_voxels, brain_mask...), checked before anything is written.
        ``clinical``: skull stripping, co-registration and working resolution decided by the
        library (its defaults); off treats the volumes as BraTS-preprocessed. ``brain_mask``: add
        the brain mask (HD-BET's when stripped) to the scene as a label map. ``output``: a
        segmentation node whose segments the result replaces (default: a new node)."""
        opts = segment_options(clinical, **options)
        self._check_volumes(volumes)
        workdir = tempfile.mkdtemp(prefix="BrainTumorSeg-")
        try:
            args = ["segment"]
            for r in ROLES:
                path = os.path.join(workdir, f"{r}.nrrd")
                _write_volume(volumes[r], path)
                args += [f"--{r}", path]
            args += ["-o", os.path.join(workdir, "labels.nrrd"), "--report", os.path.join(workdir, "report.json")]
            if model:
                args += ["--model", model]
            args += opts.to_argv({"uncertainty": os.path.join(workdir, "uncertainty.nrrd"),
                                  "brain_mask": os.path.join(workdir, "brainmask.nrrd")})
            job = Job(args, self.python)
        except Exception:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        name = name or f"{volumes['t1ce'].GetName()} tumor"
        return SegmentationRun(job, workdir, dict(volumes), name, opts.uncertainty, opts.brain_mask, output)

    def cancel(self, run: SegmentationRun) -> None:
        """Stop the run; the scene is not touched and the temporary files are removed."""
        try:
            run.job.cancel()
        finally:
            shutil.rmtree(run.workdir, ignore_errors=True)

    def finish_segmentation(self, run: SegmentationRun) -> SegmentationResult:
        """After the job ended: its result into the scene (all or nothing), or a ModuleError."""
        try:
            code = run.job.poll()
            if code is None:
                raise ModuleError("the segmentation is still running")
            if run.job.cancelled:
                raise ModuleError("cancelled")
            if code != 0:
                raise ModuleError(run.job.error)
            with open(os.path.join(run.workdir, "report.json"), encoding="utf-8") as f:
                report = json.load(f)
            return self._load_result(run, report)
        except ModuleError:
            raise
        except Exception as exc:  # whatever went wrong, the user gets one line; _load_result undid its nodes
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ModuleError(f"the result could not be added to the scene ({type(exc).__name__}"
                              f"{': ' + detail if detail else ''})") from exc
        finally:
            shutil.rmtree(run.workdir, ignore_errors=True)

    def segment(self, volumes: Mapping[str, object], progress: Optional[Callable[[str, float], None]] = None,
                should_cancel: Optional[Callable[[], bool]] = None, **options) -> SegmentationResult:
        """Blocking convenience (scripts, tests, the self-test): start, wait, finish."""
        run = self.start_segmentation(volumes, **options)
        while run.poll() is None:
            if should_cancel is not None and should_cancel():
                self.cancel(run)
                raise ModuleError("cancelled")
            if progress is not None:
                progress(run.stage, run.fraction)
            time.sleep(0.1)
        return self.finish_segmentation(run)

    def _load_result(self, run: SegmentationRun, report: Dict) -> SegmentationResult:
        from BrainTumorSegLib.labels import get_scheme

        scheme = get_scheme(report["label_scheme"])
        reference = run.volumes["t1ce"]
        scratch = slicer.vtkMRMLScene()  # temporary nodes never enter the user's scene
        labels_node = slicer.vtkMRMLLabelMapVolumeNode()
        scratch.AddNode(labels_node)
        _read_volume(os.path.join(run.workdir, "labels.nrrd"), labels_node)
        if not np.allclose(ijk_to_ras(labels_node), ijk_to_ras(reference), atol=1e-3) or \
                labels_node.GetImageData().GetDimensions() != reference.GetImageData().GetDimensions():
            raise ModuleError("the result is not on the T1ce grid")  # the CLI guarantees it; never load a shifted result
        labels = voxels(labels_node)
        before = self._node_ids()
        self.scene.StartState(self.scene.BatchProcessState)
        try:
            seg = self._segmentation_with_result(run, reference, labels, scheme, labels_node, scratch)
            table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{run.name} volumes")
            self._fill_volume_table(table, report.get("volumes_ml", {}))
            unc = mask = None
            if run.uncertainty:
                unc = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"{run.name} uncertainty")
                _read_volume(os.path.join(run.workdir, "uncertainty.nrrd"), unc)
            if run.brain_mask:
                mask = self.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", f"{run.name} brain mask")
                _read_volume(os.path.join(run.workdir, "brainmask.nrrd"), mask)
            if run.output is not None:  # last: nothing after it can fail and leave the output half-changed
                seg = self._overwrite(run.output, seg, reference)
        except Exception:  # every node made here goes (display and storage nodes included)
            self._remove_nodes_added_since(before)
            raise
        finally:
            self.scene.EndState(self.scene.BatchProcessState)
            scratch.Clear(1)
        return SegmentationResult(seg, table, unc, report, time.perf_counter() - run.started, dict(run.volumes), mask)

    def _segmentation_with_result(self, run: SegmentationRun, reference, labels: np.ndarray, scheme,
                                  labels_node, scratch):
        """A segmentation node with the three segments: in the user's scene, or in the scratch scene
        when it is to replace ``run.output``'s segments (see :meth:`_overwrite`)."""
        target = run.output
        if target is not None and self.scene.GetNodeByID(target.GetID()) is not target:
            raise ModuleError("the output segmentation is no longer in the scene")
        seg = (scratch if target is not None else self.scene).AddNewNodeByClass("vtkMRMLSegmentationNode", run.name)
        if target is None:
            seg.CreateDefaultDisplayNodes()
        seg.SetReferenceImageGeometryParameterFromVolumeNode(reference)
        for key, title, colour, terminology in SEGMENTS:
            self._set_segment(seg, key, title, colour, terminology,
                              (labels == scheme.class_value(key)).astype(np.uint8), labels_node, scratch)
        return seg

    @staticmethod
    def _overwrite(target, seg, reference):
        """``target``'s segments replaced by ``seg``'s in one copy: the last step of adding a result."""
        target.GetSegmentation().DeepCopy(seg.GetSegmentation())
        target.SetReferenceImageGeometryParameterFromVolumeNode(reference)
        if target.GetDisplayNode() is None:
            target.CreateDefaultDisplayNodes()
        return target

    def _node_ids(self) -> set:
        return {self.scene.GetNthNode(i).GetID() for i in range(self.scene.GetNumberOfNodes())}

    def _remove_nodes_added_since(self, before: set) -> None:
        for node_id in self._node_ids() - before:
            node = self.scene.GetNodeByID(node_id)
            if node is not None:
                self.scene.RemoveNode(node)

    @classmethod
    def _set_segment(cls, seg, key: str, title: str, colour, terminology: str, mask: np.ndarray,
                     geometry_node, scratch) -> None:
        segmentation = seg.GetSegmentation()
        segmentation.AddEmptySegment(key, title, colour)
        set_terminology(segmentation.GetSegment(key), terminology)
        cls.set_segment_mask(seg, key, mask, geometry_node, scratch)

    @staticmethod
    def set_segment_mask(seg, key: str, mask: np.ndarray, geometry_node, scratch=None) -> None:
        """Replace segment ``key``'s voxels by a (k, j, i) 0/1 mask on ``geometry_node``'s grid."""
        tmp = labelmap_node(mask, geometry_node, scratch or slicer.vtkMRMLScene())
        oriented = slicer.vtkSlicerSegmentationsModuleLogic.CreateOrientedImageDataFromVolumeNode(tmp)
        oriented.UnRegister(None)  # a new object the caller owns: Python's reference is then the only one
        if not slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(oriented, seg, key):
            raise ModuleError(f"could not fill segment {key}")

    @staticmethod
    def _fill_volume_table(table, volumes_ml: Mapping[str, float]) -> None:
        names, values = vtk.vtkStringArray(), vtk.vtkDoubleArray()
        names.SetName("Structure")
        values.SetName("Volume (mL)")
        for key, title in REGION_ROWS:
            if key in volumes_ml:
                names.InsertNextValue(title)
                values.InsertNextValue(round(float(volumes_ml[key]), 2))
        table.AddColumn(names)
        table.AddColumn(values)

    # ------------------------------------------------------------------ training cases and fine-tuning

    def save_training_case(self, volumes: Mapping[str, object], seg, folder: str, case_id: str,
                           label_scheme: str = "brats2021") -> str:
        """Write the four sequences and the (edited) segmentation as a BraTS-layout case folder
        ``folder/case_id`` in ``label_scheme`` (2021 names and labels 1/2/4, or 2023's -t1n... and
        1/2/3). Written into a temporary folder and renamed into place: all or nothing."""
        from BrainTumorSegLib.cases import case_file_name
        from BrainTumorSegLib.labels import get_scheme

        self._check_volumes(volumes)
        if not case_id or os.sep in case_id or "/" in case_id or case_id.startswith("."):
            raise ModuleError(f"{case_id!r} is not a usable case name")
        if not os.path.isdir(folder):
            raise ModuleError(f"{folder}: folder does not exist")
        dest = os.path.join(folder, case_id)
        if os.path.exists(dest):
            raise ModuleError(f"{dest}: exists already; choose another case name")
        segmentation = seg.GetSegmentation()
        ids = [segmentation.GetSegmentIdBySegmentName(title) or (key if segmentation.GetSegment(key) else "")
               for key, title, _, _ in SEGMENTS]
        if not all(ids):
            raise ModuleError("the segmentation needs the segments " + ", ".join(t for _, t, _, _ in SEGMENTS))
        scheme = get_scheme(label_scheme)
        layout = "brats2023" if label_scheme == "brats2023" else "brats2021"
        scratch = slicer.vtkMRMLScene()
        before = self._node_ids()
        tmp = tempfile.mkdtemp(prefix=f".{case_id}-", dir=folder)
        try:
            for r in ROLES:
                _write_volume(volumes[r], os.path.join(tmp, case_file_name(case_id, r, layout)))
            lab = slicer.vtkMRMLLabelMapVolumeNode()
            scratch.AddNode(lab)
            id_array = vtk.vtkStringArray()
            for i in ids:
                id_array.InsertNextValue(i)
            if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                    seg, id_array, lab, volumes["t1ce"], slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY):
                raise ModuleError("could not export the segmentation to a label map")
            order = voxels(lab)  # 1, 2, 3 in the order of SEGMENTS
            out = np.zeros(order.shape, np.uint8)
            for n, (key, _, _, _) in enumerate(SEGMENTS, start=1):
                out[order == n] = scheme.class_value(key)
            _write_volume(labelmap_node(out, volumes["t1ce"], scratch),
                          os.path.join(tmp, case_file_name(case_id, "seg", layout)))
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            scratch.Clear(1)
            self._remove_nodes_added_since(before)  # the export puts a colour table into the segmentation's scene
        return dest

    def start_finetune(self, model: str, data: str, out: str, epochs: int = 10, iters: int = 50,
                       device: str = "auto", freeze_encoder: bool = False, replay: Optional[str] = None,
                       extra: Optional[List[str]] = None) -> Job:
        """``braintumorseg finetune`` on a folder of saved cases, in the background (from an
        ensemble's first member when ``model`` is an ensemble)."""
        if os.path.exists(out) and os.listdir(out):
            raise ModuleError(f"{out}: exists and is not empty; choose a new run folder")
        args = ["finetune", "--from", self.finetune_source(model), "--data", data, "--out", out, "--epochs", str(epochs),
                "--iters", str(iters), "--device", device]
        if freeze_encoder:
            args.append("--freeze-encoder")
        if replay:
            args += ["--replay", replay]
        return Job(args + list(extra or []), self.python)

    def finish_finetune(self, job: Job, out: str, name: Optional[str] = None) -> str:
        """Register the fine-tuned bundle where the model list finds it; returns its folder."""
        from BrainTumorSegLib import bundles

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
            shutil.copytree(os.path.join(out, "model"), os.path.join(tmp, "model"))
            os.replace(os.path.join(tmp, "model"), dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        from BrainTumorSegLib.errors import InputError

        try:
            bundles.read_manifest(dest)  # the registered copy must read back (hash checked at load)
        except InputError as exc:
            raise ModuleError(str(exc)) from None
        return dest
