"""BrainTumorSegLib: brain tumor segmentation from T1, T1ce, T2 and FLAIR MRI.

Pure Python and PyTorch; never imports Slicer. Modules, one job each:

* ``imageio``: reading and atomic writing of NIfTI, NRRD and MetaImage volumes
* ``cases``: finding the files of a case by role (BraTS 2021 and 2023 names)
* ``labels``: label schemes and the WT/TC/ET regions
* ``preprocessing``: the reversible transform to the network grid and back
* ``registration`` and ``skullstrip``: co-registration and HD-BET skull stripping of clinical scans,
  each with its automatic decision
* ``postprocessing``: switchable clean-up of predicted labels
* ``metrics`` and ``evaluation``: BraTS metrics and ``braintumorseg evaluate``
* ``phantom``: synthetic BraTS-like cases; ``clinical_phantom``: clinical-like cases made from them
* ``networks``, ``sliding_window``, ``inference`` (``segment``), ``bundles``, ``devices``:
  the networks and the inference engine; ``segment_options``: its options, declared once
* ``dicom_series``, ``dicom_seg``, ``qc_picture``, ``extra_outputs``, ``batch``: DICOM in and out,
  QC pictures and the ``--cases`` run
* ``cli`` and ``segment_cli``: the command line (``segment``'s checks before any weights are read)
* ``training``, ``losses``, ``recipes``: training and the demo model's recipe

``BrainTumorSegLib.segment(inputs, model, device, options, progress, cancel)`` is the API the
Slicer module and scripts call.
"""
__version__ = "0.2.0"

_LAZY = {"segment": "inference", "SegmentOptions": "segment_options", "SegmentationResult": "inference"}


def __getattr__(name: str):
    """``BrainTumorSegLib.segment`` and friends, imported on first use (torch loads only then)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
