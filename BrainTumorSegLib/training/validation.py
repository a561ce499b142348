"""Validation during training: full sliding-window inference on cached cases, BraTS Dice per region."""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import torch

from ..evaluation.metrics import case_metrics
from ..labels import classes_to_labels, get_scheme
from ..models import bundles
from ..networks.base import SegmentationNetwork
from ..predict import output_kinds
from ..predict.predictor import predict_probabilities
from ..segment_options import SegmentOptions
from .data import CachedCase


def validate(net: SegmentationNetwork, name: str, val_files: Sequence[str], patch: Sequence[int],
             device: torch.device) -> Dict[str, float]:
    """Mean Dice per region over validation cases, by full sliding-window inference."""
    if not val_files:
        return {}
    net.eval()
    manifest = bundles.Manifest(id="(training)", network=name, options={}, in_sequences=tuple(net.in_sequences),
                                label_scheme="brats2021", output_kind=net.output_kind,
                                patch_size=(int(patch[0]), int(patch[1]), int(patch[2])), weights_sha256="")
    bundle = bundles.Bundle("(training)", manifest, net)  # in memory: never exported through another backend
    dices: Dict[str, List[float]] = {"WT": [], "TC": [], "ET": []}
    scheme = get_scheme("brats2021")  # prediction and reference are both made in it: nothing to detect
    for f in val_files:
        c = CachedCase(f)
        probs = predict_probabilities(c.data.astype(np.float32), [bundle], device,
                                      SegmentOptions(overlap=0.25, backend="torch")).probabilities
        pred = output_kinds.kind(net.output_kind).to_labels(probs, "brats2021")
        m = case_metrics(pred, classes_to_labels(c.classes, scheme), c.spacing, scheme, scheme)
        for r in dices:
            dices[r].append(m[r]["dice"])
    return {f"dice_{r}": float(np.mean(v)) for r, v in dices.items()}
