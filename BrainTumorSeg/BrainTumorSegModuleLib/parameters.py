"""The module's choices: the segmentation options it offers (declared in the library), their spin
box form, and the parameter node that keeps them, with the chosen volumes, in the scene."""
from __future__ import annotations

import json
from typing import Dict, Mapping, Optional, Tuple

import slicer

from BrainTumorSegLib.errors import InputError  # the package's __init__ put the library on sys.path
from BrainTumorSegLib.segment_options import SegmentOptions, defaults, help_text, specs  # noqa: F401 - help_text: the widget's

from .errors import ModuleError
from .roles import ROLES

MODULE_NAME = "BrainTumorSeg"
# the segmentation options the module offers (declared, with defaults and ranges, in the library)
MODULE_OPTIONS = ("device", "tta", "uncertainty", "min_et_voxels", "brain_mask")
# the choices a parameter node keeps with the scene, with their defaults (JSON values)
CHOICES = {"model": None, "clinical": True, **{k: defaults()[k] for k in MODULE_OPTIONS}}
# "Clinical scans: automatic" off: the volumes are taken as BraTS-preprocessed
NOT_CLINICAL = {"skull_strip": "never", "register": "never", "isotropic": "off"}


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


class Parameters:
    """The module's parameter node in ``scene`` (one per scene, saved with it)."""

    def __init__(self, scene) -> None:
        self.scene = scene

    def saved(self) -> bool:
        """Whether the scene has the module's parameter node (choices saved with it)."""
        return self.scene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode") is not None

    def node(self):
        """The parameter node, made on first use."""
        node = self.scene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag(MODULE_NAME)
            node.SetName(MODULE_NAME)
            node.SetAttribute("ModuleName", MODULE_NAME)
            self.scene.AddNode(node)
        return node

    def save(self, choices: Mapping[str, object], volumes: Mapping[str, Optional[object]], output=None) -> None:
        """Options (keys of ``CHOICES``), the input volumes (None: none chosen) and the output segmentation."""
        node = self.node()
        for key, value in choices.items():
            if key not in CHOICES:
                raise ModuleError(f"unknown choice {key!r}")
            node.SetParameter(key, json.dumps(value))
        for r in ROLES:
            v = volumes.get(r)
            node.SetNodeReferenceID(f"input_{r}", v.GetID() if v is not None else None)
        node.SetNodeReferenceID("output", output.GetID() if output is not None else None)

    def remember_result(self, seg) -> None:
        """The segmentation node of the last result (Edit and Save find it again after a scene load)."""
        self.node().SetNodeReferenceID("result", seg.GetID() if seg is not None else None)

    def last_result(self):
        """The segmentation node :meth:`remember_result` kept, if it is still in the scene."""
        return self.node().GetNodeReference("result") if self.saved() else None

    def load(self) -> Tuple[Dict[str, object], Dict[str, Optional[object]], Optional[object]]:
        """What :meth:`save` kept (defaults where nothing or something unreadable is stored)."""
        node = self.node()
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
