"""Models: bundles (weights and manifest, checked by sha256), ensembles, the catalogue of installed
models; the shipped weights lie in this folder."""
