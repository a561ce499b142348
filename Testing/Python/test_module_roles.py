"""The Segment button's rule (``BrainTumorSegModuleLib.roles.segment_blocker``): pure Python."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "BrainTumorSeg"))

from BrainTumorSegModuleLib.roles import segment_blocker  # noqa: E402


def test_segment_is_enabled_only_for_four_distinct_volumes():
    four = {"t1": "vtkMRMLScalarVolumeNode1", "t1ce": "vtkMRMLScalarVolumeNode2",
            "t2": "vtkMRMLScalarVolumeNode3", "flair": "vtkMRMLScalarVolumeNode4"}
    assert segment_blocker(four) == ""
    assert segment_blocker({}) == "Choose a volume for T1, T1ce, T2, FLAIR."
    assert segment_blocker(dict(four, t1ce=None, flair="")) == "Choose a volume for T1ce, FLAIR."
    same = segment_blocker(dict(four, t2=four["t1"]))
    assert same.startswith("T1 and T2 are the same volume")
