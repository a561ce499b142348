"""Qt-free parts of the BrainTumorSeg Slicer module: volume roles, background jobs, MRML logic.

Nothing here imports Qt, so CI runs it against real MRML through ``slicer-core``.
"""
