"""The module's MRML work, without Qt, as one object the widget, the self-test and the tests hold:
its rooms, each in its own module, share the scene and the way background jobs are started.

* :attr:`BrainTumorSegLogic.inputs`: the volumes by sequence (:mod:`.inputs`);
* :attr:`BrainTumorSegLogic.parameters`: the choices kept with the scene (:mod:`.parameters`);
* :attr:`BrainTumorSegLogic.segmentation`: a background segmentation and its result into the
  scene, all or nothing (:mod:`.segmentation`, :mod:`.results`);
* :attr:`BrainTumorSegLogic.training`: saved cases, fine-tuning, registering (:mod:`.training_cases`);
* the model list (:mod:`.models`) and the device query (:mod:`.devices`), which need no scene.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

from . import devices
from .inputs import Inputs
from .jobs import BackgroundJob, JobStarter, job_starter
from .mrml import register_converter_rules
from .parameters import Parameters
from .segmentation import Segmentation
from .training_cases import TrainingCases


class BrainTumorSegLogic:
    """MRML side of the module; ``scene`` is Slicer's scene (or any ``vtkMRMLScene`` in tests).
    Background commands run with ``python`` (default: PythonSlicer), or are started by
    ``start_job`` where a test gives its own."""

    def __init__(self, scene, python: Optional[str] = None, start_job: Optional[JobStarter] = None) -> None:
        register_converter_rules()
        self.scene = scene
        self.start_job = start_job or job_starter(python)
        self.inputs = Inputs(scene)
        self.parameters = Parameters(scene)
        self.segmentation = Segmentation(scene, self.start_job)
        self.training = TrainingCases(scene, self.start_job)

    def start_device_query(self) -> BackgroundJob:
        """Ask the library's Python which devices torch sees, in the background."""
        return devices.start_device_query(self.start_job)

    @staticmethod
    def devices_from(job: BackgroundJob) -> Tuple[List[str], str]:
        """(devices, one line on the hardware) from a finished device query."""
        return devices.devices_from(job)
