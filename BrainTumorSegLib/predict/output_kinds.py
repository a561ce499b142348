"""What a network's output channels mean, and everything that follows from it, in one place.

A network declares ``output_kind`` by name (stored in the bundle manifest): ``softmax``, four
mutually exclusive classes (background, NCR, ED, ET), or ``sigmoid``, three overlapping regions
(WT, TC, ET; the BraTS-winning region-based formulation). :func:`kind` gives the object that
knows its activation, channel count, the way to labels and its uncertainty.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Dict

import numpy as np

from ..labels import classes_to_labels, regions_to_labels

if TYPE_CHECKING:  # torch loads only when a network runs: manifests are checked without it
    import torch


class OutputKind:
    name: str = ""
    channels: int = 0

    def activation(self, logits: "torch.Tensor") -> "torch.Tensor":
        """Probabilities from logits (N, C, ...)."""
        raise NotImplementedError

    def to_labels(self, probs: np.ndarray, scheme: str) -> np.ndarray:
        """Label values of ``scheme`` from probabilities (C, z, y, x)."""
        raise NotImplementedError

    def entropy(self, probs: np.ndarray) -> np.ndarray:
        """Voxel-wise uncertainty in [0, 1] from probabilities (C, z, y, x)."""
        raise NotImplementedError


class Softmax(OutputKind):
    name, channels = "softmax", 4

    def activation(self, logits: "torch.Tensor") -> "torch.Tensor":
        return logits.softmax(1)

    def to_labels(self, probs: np.ndarray, scheme: str) -> np.ndarray:
        return classes_to_labels(probs.argmax(0), scheme)

    def entropy(self, probs: np.ndarray) -> np.ndarray:
        """Normalised categorical entropy."""
        p = np.clip(probs, 1e-6, 1 - 1e-6)
        return (-(p * np.log(p)).sum(0) / math.log(p.shape[0])).astype(np.float32)


class Sigmoid(OutputKind):
    name, channels = "sigmoid", 3

    def activation(self, logits: "torch.Tensor") -> "torch.Tensor":
        return logits.sigmoid()

    def to_labels(self, probs: np.ndarray, scheme: str) -> np.ndarray:
        return regions_to_labels(probs > 0.5, scheme)

    def entropy(self, probs: np.ndarray) -> np.ndarray:
        """Mean binary entropy of the three regions."""
        p = np.clip(probs, 1e-6, 1 - 1e-6)
        h = -(p * np.log(p) + (1 - p) * np.log(1 - p)) / math.log(2)
        return h.mean(0).astype(np.float32)


KINDS: Dict[str, OutputKind] = {k.name: k for k in (Softmax(), Sigmoid())}


def kind(name: str) -> OutputKind:
    """The output kind called ``name`` (``softmax`` or ``sigmoid``)."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown output kind {name!r}; known: {', '.join(KINDS)}") from None
