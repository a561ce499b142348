"""Postprocess: labels from probabilities, clean-up, the inverse transform onto the reference input's
grid, and tumor volumes."""
