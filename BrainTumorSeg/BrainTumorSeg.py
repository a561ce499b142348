"""BrainTumorSeg: segment a brain tumor from T1, T1ce, T2 and FLAIR into necrotic core, edema and
enhancing tumor as editable Slicer segments; save corrected cases and fine-tune on them.

The widget only wires the UI. MRML work is in ``BrainTumorSegModuleLib.logic`` (no Qt, tested in
CI on real MRML); computation runs in ``BrainTumorSegLib`` in a background process.
"""
from __future__ import annotations

import os
from typing import Sequence

import qt
import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleTest,
                                           ScriptedLoadableModuleWidget)

from BrainTumorSegModuleLib import dependencies
from BrainTumorSegModuleLib.logic import BrainTumorSegLogic, ModuleError
from BrainTumorSegModuleLib.roles import ROLES

MODEL_NOTE = ("The model shipped with this extension (brats-synthetic-demo) was trained only on synthetic "
              "phantoms, not on patient data. It shows the workflow; it is not for clinical use and its "
              "numbers say nothing about real MRI. Models you train or fine-tune on your own cases appear "
              "in the model list; none of them is validated for clinical use.")


def ensure_pip_packages(extras: Sequence[str] = ()) -> bool:
    """Missing pip packages, installed on confirmation: ``slicer.packaging.pip_ensure`` where this
    Slicer has it, else ``slicer.util.pip_install`` after our own question."""
    reqs = dependencies.missing_pip_requirements(extras)
    if reqs:
        packaging = getattr(slicer, "packaging", None)
        if packaging is not None and hasattr(packaging, "pip_ensure"):
            packaging.pip_ensure(reqs, requester="BrainTumorSeg")
        elif slicer.util.confirmOkCancelDisplay(f"BrainTumorSeg needs: {', '.join(reqs)}. Install now?"):
            slicer.util.pip_install(reqs)
        else:
            return False
    return not dependencies.missing_pip_requirements(extras)


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
            "proceedings. Label conventions from the BraTS challenges.")


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
        self.result = None
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.connect("timeout()", self.onTimer)
        self.selectors = {"t1": self.ui.t1Selector, "t1ce": self.ui.t1ceSelector,
                          "t2": self.ui.t2Selector, "flair": self.ui.flairSelector}
        for sel in self.selectors.values():
            sel.setMRMLScene(slicer.mrmlScene)
        self.ui.autoAssignButton.connect("clicked()", self.onAutoAssign)
        self.ui.loadModelButton.connect("clicked()", self.onLoadModel)
        self.ui.segmentButton.connect("clicked()", self.onSegmentOrCancel)
        self.ui.editButton.connect("clicked()", self.onEdit)
        self.ui.show3DButton.connect("clicked()", self.onShow3D)
        self.ui.saveCaseButton.connect("clicked()", self.onSaveCase)
        self.ui.finetuneButton.connect("clicked()", self.onFinetuneOrCancel)
        self.ui.modelNoteLabel.text = MODEL_NOTE
        self.refreshModels()
        self.ui.deviceComboBox.addItem("Auto")
        self.ui.hardwareLabel.text = "Detecting hardware..."
        self.device_job = None
        self.onAutoAssign()

    def enter(self) -> None:
        if self.device_job is None and not dependencies.torch_missing():
            self.device_job = self.logic.start_device_query()
            self.timer.start()

    def cleanup(self) -> None:
        self.timer.stop()
        if self.run is not None:
            self.logic.cancel(self.run)
        if self.finetune_job is not None:
            self.finetune_job.cancel()

    # ------------------------------------------------------------------ inputs and options

    def onAutoAssign(self) -> None:
        chosen, notes = self.logic.assign_volumes()
        for role, node in chosen.items():
            if node is not None:
                self.selectors[role].setCurrentNode(node)
        self.ui.statusLabel.text = "; ".join(notes)

    def refreshModels(self, select: str = "") -> None:
        self.ui.modelComboBox.clear()
        for m in self.logic.models():
            tag = " (demo, synthetic data)" if m.get("demo") else ""
            self.ui.modelComboBox.addItem(f"{m['name']}{tag}", m["path"])
        if select:
            self.ui.modelComboBox.setCurrentIndex(max(0, self.ui.modelComboBox.findData(select)))

    def onLoadModel(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Model bundle folder")
        if folder:
            self.ui.modelComboBox.addItem(os.path.basename(folder), folder)
            self.ui.modelComboBox.setCurrentIndex(self.ui.modelComboBox.count - 1)

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
            if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True) is None:
                return False
        return ensure_pip_packages(extras)

    # ------------------------------------------------------------------ segmenting

    def onSegmentOrCancel(self) -> None:
        if self.run is not None:
            self.logic.cancel(self.run)
            self.run = None
            self.setBusy(False, "Cancelled; the scene is unchanged.")
            return
        if not self.ensureDependencies():
            return
        try:
            self.run = self.logic.start_segmentation(
                self.volumes(), model=self.ui.modelComboBox.currentData, device=self.device(),
                tta=self.ui.ttaCheckBox.checked, uncertainty=self.ui.uncertaintyCheckBox.checked,
                min_et_voxels=self.ui.etThresholdSpinBox.value)
        except ModuleError as exc:
            self.ui.statusLabel.text = f"Error: {exc}"
            return
        self.setBusy(True, "Starting...")
        self.timer.start()

    def setBusy(self, busy: bool, status: str) -> None:
        self.ui.segmentButton.text = "Cancel" if busy else "Segment"
        self.ui.progressBar.visible = busy
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = status

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
        try:
            devices, description = self.logic.devices_from(self.device_job)
            for d in devices:
                self.ui.deviceComboBox.addItem(d.upper() if d in ("cpu", "mps") else d)
            self.ui.hardwareLabel.text = description
        except ModuleError as exc:
            self.ui.hardwareLabel.text = f"torch could not start: {exc}"
        self.device_job = None

    def pollSegmentation(self) -> None:
        run = self.run
        self.ui.progressBar.value = int(100 * run.fraction)
        self.ui.statusLabel.text = run.stage
        if run.poll() is None:
            return
        self.run = None
        try:
            self.result = self.logic.finish_segmentation(run)
        except ModuleError as exc:
            self.setBusy(False, f"Error: {exc}")
            return
        self.setBusy(False, self.result.status())
        slicer.util.setSliceViewerLayers(background=run.volumes["t1ce"])
        self.ui.volumesTableView.setMRMLTableNode(self.result.table)
        if self.result.uncertainty is not None:
            slicer.util.setSliceViewerLayers(foreground=self.result.uncertainty, foregroundOpacity=0.4)
        for w in (self.ui.editButton, self.ui.show3DButton, self.ui.saveCaseButton):
            w.enabled = True

    def onEdit(self) -> None:
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(self.result.segmentation)
        editor.setSourceVolumeNode(self.volumes()["t1ce"])

    def onShow3D(self) -> None:
        self.logic.show_3d(self.result.segmentation)

    # ------------------------------------------------------------------ training cases and fine-tuning

    def onSaveCase(self) -> None:
        folder = self.ui.caseFolderPathLineEdit.currentPath
        manifest = next((m for m in self.logic.models() if m["path"] == self.ui.modelComboBox.currentData), {})
        try:
            path = self.logic.save_training_case(self.volumes(), self.result.segmentation, folder,
                                                 self.ui.caseIdLineEdit.text.strip(),
                                                 manifest.get("label_scheme", "brats2021"))
        except ModuleError as exc:
            self.ui.statusLabel.text = f"Error: {exc}"
            return
        self.ui.statusLabel.text = f"Saved {path}"

    def onFinetuneOrCancel(self) -> None:
        if self.finetune_job is not None:
            self.finetune_job.cancel()
            self.finetune_job = None
            self.ui.finetuneButton.text = "Fine-tune"
            self.ui.finetuneStatusLabel.text = "Fine-tuning cancelled."
            return
        if not self.ensureDependencies(extras=("train",)):
            return
        folder = self.ui.caseFolderPathLineEdit.currentPath
        # the run folder lives outside the cases folder, which must hold cases only
        self.finetune_out = os.path.join(os.path.expanduser("~"), ".braintumorseg", "runs",
                                         qt.QDateTime.currentDateTime().toString("yyyyMMdd-hhmmss"))
        try:
            os.makedirs(os.path.dirname(self.finetune_out), exist_ok=True)
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
        self.ui.finetuneStatusLabel.text = f"Fine-tuning: {100 * job.fraction:.0f} %"
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
        import tempfile

        self.assertTrue(ensure_pip_packages(extras=("phantoms",)), "dependencies were not installed")
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
