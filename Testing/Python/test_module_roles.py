"""The Segment button's rule (``BrainTumorSegModuleLib.roles.segment_blocker``): pure Python."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "BrainTumorSeg"))

from BrainTumorSegModuleLib.roles import left_out, segment_blocker  # noqa: E402


def test_segment_needs_a_t1ce_and_a_flair_and_distinct_volumes():
    four = {"t1": "vtkMRMLScalarVolumeNode1", "t1ce": "vtkMRMLScalarVolumeNode2",
            "t2": "vtkMRMLScalarVolumeNode3", "flair": "vtkMRMLScalarVolumeNode4"}
    assert segment_blocker(four) == ""
    assert segment_blocker({}) == "Choose a volume for T1ce, FLAIR."
    assert segment_blocker(dict(four, t1ce=None, flair="")) == "Choose a volume for T1ce, FLAIR."
    same = segment_blocker(dict(four, t2=four["t1"]))
    assert same.startswith("T1 and T2 are the same volume")
    # T1 and T2 may be left out (the library leaves their channel empty)
    assert segment_blocker(dict(four, t2=None)) == segment_blocker(dict(four, t1="", t2=None)) == ""
    assert left_out(dict(four, t2=None)) == ["T2"] and left_out(four) == []
    assert segment_blocker(dict(four, t2=None, t1=four["flair"])).startswith("T1 and FLAIR are the same volume")


def test_module_roles_are_the_librarys_sequences_and_progress_lines_round_trip():
    """The module keeps its own copy of the sequence lists (it must load before the library's
    dependencies are installed); they must equal the library's."""
    from BrainTumorSegLib import progress
    from BrainTumorSegLib.read.cases import OPTIONAL_SEQUENCES, REQUIRED_SEQUENCES, SEQUENCES
    from BrainTumorSegModuleLib.roles import OPTIONAL_ROLES, REQUIRED_ROLES, ROLES

    assert ROLES == SEQUENCES
    assert OPTIONAL_ROLES == OPTIONAL_SEQUENCES and REQUIRED_ROLES == REQUIRED_SEQUENCES
    assert progress.parse_line(progress.format_line("predict 1/2", 0.25)) == ("predict 1/2", 0.25)
    assert progress.parse_line("progress training x") is None and progress.parse_line("WT 3 mL") is None
