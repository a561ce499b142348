"""The input volumes by sequence: finding them in the scene, checking them, writing them to files."""
from __future__ import annotations

import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from .errors import ModuleError
from .mrml import RESULT_ATTRIBUTE, voxels, write_volume
from .roles import REQUIRED_ROLES, ROLE_TITLES, ROLES, assign

Volumes = Mapping[str, Optional[object]]  # role -> volume node, or None where none is chosen


def given(volumes: Volumes) -> Dict[str, object]:
    """The roles that have a volume, in the order of ROLES."""
    return {r: volumes[r] for r in ROLES if volumes.get(r) is not None}


def check_volumes(volumes: Volumes, needed: Sequence[str] = REQUIRED_ROLES) -> Dict[str, object]:
    """The given volumes, once they can be used: every role in ``needed`` has one, no volume is
    chosen twice, each has voxels and none is under a transform. Else a one-line ModuleError."""
    missing = [ROLE_TITLES[r] for r in needed if volumes.get(r) is None]
    if missing:
        raise ModuleError(f"choose a volume for {', '.join(missing)}")
    chosen = given(volumes)
    if len({n.GetID() for n in chosen.values()}) < len(chosen):
        raise ModuleError("the same volume is chosen for two sequences")
    for r, n in chosen.items():
        if n.GetImageData() is None:
            raise ModuleError(f"{n.GetName()} ({ROLE_TITLES[r]}) has no voxels")
        if n.GetParentTransformNode() is not None:
            raise ModuleError(f"{n.GetName()} ({ROLE_TITLES[r]}) is under a transform; harden it first")
    return chosen


def write_volumes(volumes: Mapping[str, object], folder: str, file_name=lambda role: f"{role}.nrrd") -> Dict[str, str]:
    """Write each volume into ``folder`` as ``file_name(role)``; returns {role: path}."""
    paths = {}
    for r, node in volumes.items():
        paths[r] = os.path.join(folder, file_name(r))
        write_volume(node, paths[r])
    return paths


class Inputs:
    """The scene's volumes as the inputs of a segmentation."""

    def __init__(self, scene) -> None:
        self.scene = scene

    def scalar_volumes(self) -> List[object]:
        """The scene's scalar volumes, label maps and the volumes a run added (its uncertainty map,
        named after the T1ce) left out."""
        nodes = [self.scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
                 for i in range(self.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))]
        return [n for n in nodes if not n.IsA("vtkMRMLLabelMapVolumeNode") and not n.GetAttribute(RESULT_ATTRIBUTE)]

    def assign_volumes(self, nodes: Optional[List[object]] = None) -> Tuple[Dict[str, Optional[object]], List[str]]:
        """Guess each sequence's volume from the node names: ({role: node or None}, notes)."""
        nodes = self.scalar_volumes() if nodes is None else nodes
        idx, notes = assign([n.GetName() for n in nodes])
        return {r: (nodes[i] if i is not None else None) for r, i in idx.items()}, notes

    @staticmethod
    def needs_skull_stripping(volumes: Volumes) -> bool:
        """Whether any of the given volumes still looks like a head (the library's own check), so
        that segmenting it with clinical handling on needs HD-BET (the ``clinical`` extra)."""
        from BrainTumorSegLib.preprocess.skullstrip import check_stripped_array
        from BrainTumorSegLib.read.images import voxel_volume_ml

        chosen = check_volumes(volumes)
        return not all(check_stripped_array(voxels(n), voxel_volume_ml(n)).stripped for n in chosen.values())
