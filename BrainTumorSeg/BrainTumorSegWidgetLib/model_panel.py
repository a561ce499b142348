"""The model and device section: the model list (installed bundles and folders loaded by hand),
the chosen model's note from its manifest, and the devices torch sees."""
from __future__ import annotations

from typing import Dict, List, Optional

import qt
import slicer

from BrainTumorSegModuleLib import dependencies
from BrainTumorSegModuleLib.errors import ModuleError, one_line
from BrainTumorSegModuleLib.models import model_note, model_tooltip, models, models_in

from .panel import Panel, guarded

MODEL_FOLDERS_KEY = "BrainTumorSeg/modelFolders"  # bundle folders the user loaded by hand


class ModelPanel(Panel):
    """The model list with its note, and the device list with the hardware line."""

    def __init__(self, widget) -> None:
        super().__init__(widget)
        self.manifests: List[Dict] = []  # in the order of the model list
        self.device_job = None
        self.devices_known = False
        self.ui.loadModelButton.connect("clicked()", self.onLoadModel)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.showNote)
        self.refresh()
        self.ui.deviceComboBox.addItem("Auto")

    # ------------------------------------------------------------------ models

    def refresh(self, select: str = "") -> None:
        """Installed bundles and folders loaded by hand earlier (remembered in Slicer's settings),
        each with its description, label scheme and validation figures as a tooltip."""
        self.manifests = models() + models_in(self.rememberedFolders())
        self.ui.modelComboBox.clear()
        for m in self.manifests:
            tag = " (demo, synthetic data)" if m.get("demo") else ""
            self.ui.modelComboBox.addItem(f"{m['name']}{tag}", m["path"])
            self.ui.modelComboBox.setItemData(self.ui.modelComboBox.count - 1, model_tooltip(m), qt.Qt.ToolTipRole)
        if select:
            self.ui.modelComboBox.setCurrentIndex(max(0, self.ui.modelComboBox.findData(select)))
        self.showNote()

    @guarded
    def showNote(self, *unused) -> None:
        """The chosen model's note: what it is and its held-out figures, from its manifest."""
        index = self.ui.modelComboBox.currentIndex
        chosen = self.manifests[index] if 0 <= index < len(self.manifests) else None
        self.ui.modelNoteLabel.text = model_note(chosen) if chosen else "No model is installed."

    def model(self) -> Optional[str]:
        """The chosen model's folder."""
        return self.ui.modelComboBox.currentData

    def selectModel(self, path: str) -> None:
        """Choose the model in ``path`` where the list has it; else leave the choice."""
        index = self.ui.modelComboBox.findData(path)
        if index >= 0:
            self.ui.modelComboBox.setCurrentIndex(index)

    @staticmethod
    def rememberedFolders() -> list:
        value = qt.QSettings().value(MODEL_FOLDERS_KEY) or []
        return [value] if isinstance(value, str) else [str(v) for v in value]

    @guarded
    def onLoadModel(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Model bundle folder")
        if folder:
            folders = [f for f in self.rememberedFolders() if f != folder] + [folder]
            qt.QSettings().setValue(MODEL_FOLDERS_KEY, folders)
            self.refresh(select=folder)

    # ------------------------------------------------------------------ devices

    def device(self) -> str:
        text = self.ui.deviceComboBox.currentText
        return "auto" if text == "Auto" else text.split()[0].lower()

    def selectDevice(self, device: str) -> None:
        """Select ``device`` (auto, cpu, cuda:0...) where this machine has it; else leave the choice."""
        for i in range(self.ui.deviceComboBox.count):
            if self.ui.deviceComboBox.itemText(i).split()[0].lower() == device.lower():
                self.ui.deviceComboBox.setCurrentIndex(i)

    def savedDevice(self) -> str:
        """The device kept with the scene, or '' when the scene has no choices yet."""
        if not self.logic.parameters.saved():
            return ""
        return str(self.logic.parameters.load()[0]["device"] or "")

    def startDeviceQuery(self) -> None:
        """Ask once which devices torch sees; again when torch arrives later (installed on first use)."""
        if self.devices_known or self.device_job is not None:
            return
        if dependencies.torch_missing():
            self.ui.hardwareLabel.text = (f"torch {dependencies.TORCH_AT_LEAST} or newer is not installed yet; "
                                          "Segment offers to install it.")
            return
        self.ui.hardwareLabel.text = "Detecting hardware..."
        self.device_job = self.logic.start_device_query()
        self.widget.timer.start()

    def pollDevices(self) -> None:
        """From the timer: once the query ended, fill the device list."""
        if self.device_job is not None and self.device_job.poll() is not None:
            self.showDevices()

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

    def setEnabled(self, enabled: bool) -> None:
        for w in (self.ui.modelComboBox, self.ui.loadModelButton, self.ui.deviceComboBox):
            w.enabled = enabled
