"""Segmentation losses shared by training and tests.

* ``soft_dice_loss``: 1 - mean over channels of 2|P.G| / (|P| + |G|), optionally class-weighted
  (AGSE-VNet's [0.1, 1, 1, 1]).
* ``softmax_dice_ce``: Dice on softmax classes plus cross-entropy.
* ``sigmoid_dice_bce``: Dice on sigmoid regions plus binary cross-entropy (region-based training),
  optionally the cross-entropy of each region's hardest voxels only (nnU-Net's "TopK" loss).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F


def regions_of(classes: torch.Tensor) -> torch.Tensor:
    """(B, z, y, x) classes 0..3 (bg, NCR, ED, ET) to (B, 3, ...) float WT, TC, ET."""
    return torch.stack([classes > 0, (classes == 1) | (classes == 3), classes == 3], 1).float()


def onehot_of(classes: torch.Tensor, n: int = 4) -> torch.Tensor:
    """(B, z, y, x) classes to (B, n, ...) float one-hot."""
    return F.one_hot(classes, n).movedim(-1, 1).float()


def soft_dice_loss(probs: torch.Tensor, target: torch.Tensor, weights: Optional[Sequence[float]] = None,
                   smooth: float = 1e-5) -> torch.Tensor:
    """``probs`` and one-hot/region ``target`` of shape (B, C, ...)."""
    dims = tuple(range(2, probs.dim()))
    inter = (probs * target).sum(dims)
    denom = probs.sum(dims) + target.sum(dims)
    dice = (2 * inter + smooth) / (denom + smooth)            # B x C
    if weights is None:
        return 1 - dice.mean()
    w = torch.as_tensor(weights, dtype=dice.dtype, device=dice.device)
    return 1 - (dice * w).sum(1).mean() / w.sum()


def softmax_dice_ce(logits: torch.Tensor, classes: torch.Tensor,
                    weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """``classes``: (B, ...) integer class indices 0..C-1."""
    onehot = F.one_hot(classes.long(), logits.shape[1]).movedim(-1, 1).to(logits.dtype)
    return soft_dice_loss(torch.softmax(logits, 1), onehot, weights) + F.cross_entropy(logits, classes.long())


def sigmoid_dice_bce(logits: torch.Tensor, regions: torch.Tensor,
                     weights: Optional[Sequence[float]] = None, hardest: Optional[float] = None) -> torch.Tensor:
    """``regions``: (B, 3, ...) float masks WT, TC, ET; ``weights`` (one per region, normalised to
    sum 1 in both terms) make some regions count more than others; ``hardest`` (a share in (0, 1]):
    each region's cross-entropy is the mean over only that share of its voxels with the largest
    cross-entropy in the batch (the TopK loss of Wu et al., arXiv:1605.06885, as nnU-Net offers it:
    confident errors are not averaged away by the many easy background voxels)."""
    if weights is None and hardest is None:
        return soft_dice_loss(torch.sigmoid(logits), regions) + F.binary_cross_entropy_with_logits(logits, regions)
    w = torch.ones(logits.shape[1], dtype=logits.dtype, device=logits.device) if weights is None else \
        torch.as_tensor(weights, dtype=logits.dtype, device=logits.device)
    bce = F.binary_cross_entropy_with_logits(logits, regions, reduction="none")
    if hardest is None:
        per_region = bce.mean([0] + list(range(2, logits.dim())))
    else:
        if not 0 < hardest <= 1:
            raise ValueError(f"hardest must be a share in (0, 1], not {hardest}")
        voxels = bce.movedim(1, 0).flatten(1)
        per_region = voxels.topk(max(1, round(hardest * voxels.shape[1])), dim=1, sorted=False).values.mean(1)
    return soft_dice_loss(torch.sigmoid(logits), regions, weights) + (per_region * w).sum() / w.sum()
