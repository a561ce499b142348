"""Predict: probabilities from the networks (sliding window, test-time augmentation, ensembles), on
the device and backend chosen."""
