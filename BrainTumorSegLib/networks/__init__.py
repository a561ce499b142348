"""The networks of our papers and a baseline, behind one interface.

``build(name, **options)`` makes a network; ``NETWORKS`` lists the names. Every network is a
:class:`SegmentationNetwork` declaring ``output_kind`` ("softmax": classes background, NCR, ED,
ET; "sigmoid": regions WT, TC, ET), ``in_sequences`` (channel order), ``patch_size`` (z, y, x),
``divisor`` and ``aux_outputs`` (training-only outputs). In eval mode a network returns its
logits; in train mode a dict with ``"out"`` and the auxiliary outputs.
"""
from __future__ import annotations

from typing import Dict, Type

from .agse_vnet import AGSEVNet
from .base import SegmentationNetwork, TrainingDefaults
from .cascade import CoarseToFine
from .cga_unet import CGAUNet
from .dmda_unet import DMDACascade
from .resunet import ResUNet

NETWORKS: Dict[str, Type[SegmentationNetwork]] = {
    "resunet": ResUNet,
    "agse_vnet": AGSEVNet,
    "cga_unet": CGAUNet,
    "dmda_unet": DMDACascade,
    "coarse_to_fine": CoarseToFine,
}
DEFAULT_NETWORK = "resunet"


def network_class(name: str) -> Type[SegmentationNetwork]:
    """The class of network ``name`` (what it declares: output kind, training defaults, loss...)."""
    from ..errors import InputError

    try:
        return NETWORKS[name]
    except KeyError:
        raise InputError(None, f"unknown network {name!r}; known: {', '.join(NETWORKS)}") from None


def build(name: str, **options) -> SegmentationNetwork:
    """Build network ``name`` with keyword ``options`` of its constructor."""
    from ..errors import InputError

    cls = network_class(name)
    try:
        return cls(**options)
    except TypeError as exc:
        raise InputError(None, f"bad options for network {name}: {exc}") from None


__all__ = ["NETWORKS", "DEFAULT_NETWORK", "build", "network_class", "SegmentationNetwork", "TrainingDefaults",
           "AGSEVNet", "CGAUNet", "CoarseToFine", "DMDACascade", "ResUNet"]
