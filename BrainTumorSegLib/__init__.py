"""BrainTumorSegLib: brain tumor segmentation from T1, T1ce, T2 and FLAIR MRI.

Pure Python and PyTorch; never imports Slicer. The sub-packages follow the pipeline, in order:

* ``read``: volumes, DICOM series, the files of a case by role
* ``preprocess``: registration, skull stripping, working grid, crop and normalisation, and the way back
* ``predict``: sliding-window prediction, test-time augmentation, ensembles, devices and backends
* ``postprocess``: labels from probabilities, clean-up, onto the input's grid, volumes
* ``write``: label volumes, DICOM SEG, QC pictures, batch page, all written atomically

``pipeline.segment`` runs them for one case; ``segment_options`` declares its options once. Beside
the pipeline: ``models`` (bundles, ensembles, the shipped weights), ``networks``, ``training``,
``evaluation`` (metrics, scoring, the real cases' grades and folds), ``recipes`` (how the shipped
models are made), ``synthetic`` (phantoms), ``cli`` (the ``braintumorseg`` command); ``labels``
(label schemes and WT/TC/ET regions), ``errors``, ``progress`` and ``extras`` serve them all.

``BrainTumorSegLib.segment(inputs, model, device, options, progress, cancel)`` is the API the
Slicer module and scripts call.
"""
__version__ = "0.2.0"

_LAZY = {"segment": "pipeline", "SegmentOptions": "segment_options", "SegmentationResult": "pipeline"}


def __getattr__(name: str):
    """``BrainTumorSegLib.segment`` and friends, imported on first use (torch loads only then)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
