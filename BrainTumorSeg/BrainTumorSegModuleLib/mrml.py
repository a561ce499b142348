"""Small MRML helpers the rooms share: volumes to and from files, voxels to and from arrays, and
removing the nodes an operation added to a scene."""
from __future__ import annotations

from typing import Set

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from .errors import ModuleError

RESULT_ATTRIBUTE = "BrainTumorSeg.Result"  # on the volumes a run adds, so that no selector takes them for an input


def register_converter_rules() -> None:
    """Slicer registers these at start-up; plain ``slicer-core`` does not."""
    fac = slicer.vtkSegmentationConverterFactory.GetInstance()
    labelmap = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    if fac.ConstructRepresentationObjectByRepresentation(labelmap) is None:
        fac.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
        fac.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())


def read_volume(path: str, node) -> None:
    """Read a volume file into ``node``; a ModuleError when it cannot be read."""
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(path)
    if not storage.ReadData(node):
        raise ModuleError(f"{path}: could not be read")


def write_volume(node, path: str) -> None:
    """Write ``node`` to ``path`` (compressed for ``.gz``); a ModuleError when it cannot."""
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
    """A volume node's IJK-to-RAS matrix as a 4 x 4 array."""
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def node_ids(scene) -> Set[str]:
    """The IDs of every node in ``scene``."""
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def remove_nodes_added_since(scene, before: Set[str]) -> None:
    """Remove every node whose ID is not in ``before`` (display and storage nodes included)."""
    for node_id in node_ids(scene) - before:
        node = scene.GetNodeByID(node_id)
        if node is not None:
            scene.RemoveNode(node)
