"""The Qt side of the BrainTumorSeg widget, one panel per section of its UI: the inputs, the model
and device, saving cases and fine-tuning. The widget (``BrainTumorSeg.py``) holds them and runs
the segmentation itself. All MRML work is in the Qt-free ``BrainTumorSegModuleLib``.
"""
