"""The training section: save the (edited) result as a training case, fine-tune on saved cases in
the background, and put the fine-tuned model into the model list."""
from __future__ import annotations

import os

import qt

from BrainTumorSegModuleLib.errors import ModuleError
from BrainTumorSegModuleLib.models import finetune_source

from .panel import Panel, guarded


class TrainingPanel(Panel):
    """Save as training case, and Fine-tune (which turns into Cancel while it runs)."""

    def __init__(self, widget) -> None:
        super().__init__(widget)
        self.job = None   # a fine-tuning in progress
        self.source = ""  # the bundle it started from (an ensemble's first member)
        self.out = ""     # its run folder
        self.ui.saveCaseButton.connect("clicked()", self.onSaveCase)
        self.ui.finetuneButton.connect("clicked()", self.onFinetuneOrCancel)

    @guarded
    def onSaveCase(self) -> None:
        result = self.widget.result
        gone = result.gone()
        if gone:
            self.ui.statusLabel.text = f"Error: {gone}"
            return
        folder = self.ui.caseFolderPathLineEdit.currentPath
        try:  # the run's own inputs and label scheme, whatever is chosen in the selectors now
            path = self.logic.training.save_case(result.volumes, result.segmentation, folder,
                                                 self.ui.caseIdLineEdit.text.strip(),
                                                 result.report.get("label_scheme", "brats2021"))
        except ModuleError as exc:
            self.ui.statusLabel.text = f"Error: {exc}"
            return
        self.ui.statusLabel.text = f"Saved {path}"

    @guarded
    def onFinetuneOrCancel(self) -> None:
        if self.job is not None:
            self.cancel()
            self.ui.finetuneStatusLabel.text = "Fine-tuning cancelled."
            return
        folder = self.ui.caseFolderPathLineEdit.currentPath
        model = self.widget.models.model()
        if not model:
            self.ui.finetuneStatusLabel.text = "Choose a model to start from."
            return
        if not folder or not os.path.isdir(folder):
            self.ui.finetuneStatusLabel.text = "Choose the folder of saved training cases."
            return
        if not self.widget.ensureDependencies(extras=("train",)):
            self.ui.finetuneStatusLabel.text = "Not started: the packages it needs are not installed."
            return
        # the run folder lives outside the cases folder, which must hold cases only
        self.out = os.path.join(os.path.expanduser("~"), ".braintumorseg", "runs",
                                qt.QDateTime.currentDateTime().toString("yyyyMMdd-hhmmss"))
        try:
            os.makedirs(os.path.dirname(self.out), exist_ok=True)
            self.source = os.path.basename(finetune_source(model))
            self.job = self.logic.training.start_finetune(
                model, folder, self.out, epochs=self.ui.finetuneEpochsSpinBox.value,
                device=self.widget.models.device(), freeze_encoder=self.ui.freezeEncoderCheckBox.checked)
        except (ModuleError, OSError) as exc:
            self.ui.finetuneStatusLabel.text = f"Error: {exc}"
            return
        self.ui.finetuneButton.text = "Cancel fine-tuning"
        self.widget.timer.start()

    def poll(self) -> None:
        """From the timer: progress, and the new model into the list once the job ended."""
        job = self.job
        self.ui.finetuneStatusLabel.text = f"Fine-tuning {self.source}: {100 * job.fraction:.0f} %"
        if job.poll() is None:
            return
        self.job = None
        self.ui.finetuneButton.text = "Fine-tune"
        try:
            path = self.logic.training.finish_finetune(job, self.out)
        except ModuleError as exc:
            self.ui.finetuneStatusLabel.text = f"Error: {exc}"
            return
        self.widget.models.refresh(select=path)
        self.ui.finetuneStatusLabel.text = f"New model {os.path.basename(path)} is in the model list."

    def cancel(self) -> None:
        """Stop a running fine-tuning (module closed, or Cancel)."""
        if self.job is not None:
            self.job.cancel()
            self.job = None
        self.ui.finetuneButton.text = "Fine-tune"

    def resetButton(self) -> None:
        """After an error elsewhere: the button says Fine-tune unless a fine-tuning runs."""
        if self.job is None:
            self.ui.finetuneButton.text = "Fine-tune"
