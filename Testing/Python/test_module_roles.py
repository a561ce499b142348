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


def test_module_roles_are_the_librarys_sequences_and_progress_lines_round_trip():
    """The module keeps its own copy of the sequence list (it must load before the library's
    dependencies are installed); it must equal the library's."""
    from BrainTumorSegLib import progress
    from BrainTumorSegLib.read.cases import SEQUENCES
    from BrainTumorSegModuleLib.roles import ROLES

    assert ROLES == SEQUENCES
    assert progress.parse_line(progress.format_line("predict 1/2", 0.25)) == ("predict 1/2", 0.25)
    assert progress.parse_line("progress training x") is None and progress.parse_line("WT 3 mL") is None
