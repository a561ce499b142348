"""Segmentation losses shared by training and tests.

* ``soft_dice_loss``: 1 - mean over channels of 2|P.G| / (|P| + |G|), optionally class-weighted
  (AGSE-VNet's [0.1, 1, 1, 1]).
* ``softmax_dice_ce``: Dice on softmax classes plus cross-entropy.
* ``sigmoid_dice_bce``: Dice on sigmoid regions plus binary cross-entropy (region-based training),
  optionally the cross-entropy of each region's hardest voxels only (nnU-Net's "TopK" loss) and
  the Dice over the whole batch (nnU-Net's batch Dice: the ``batch_dice`` of its 3D trainers), and
  the Tversky index in place of the Dice (missed voxels weighed above false ones).
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
                   smooth: float = 1e-5, batch: bool = False, missed: float = 0.5) -> torch.Tensor:
    """``probs`` and one-hot/region ``target`` of shape (B, C, ...); ``batch``: each channel's Dice
    over the whole batch at once (nnU-Net's batch Dice) rather than per sample, so that a patch
    without a region does not make any probability of it there cost almost a whole Dice;
    ``missed`` in (0, 1): the Tversky index's weight of missed voxels, 1 - ``missed`` that of false
    ones (Salehi et al., MLMI 2017, arXiv:1706.05721); 0.5 is the Dice."""
    if not 0 < missed < 1:
        raise ValueError(f"missed must be a weight in (0, 1), not {missed}")
    dims = tuple(range(2, probs.dim()))
    if batch:
        dims = (0,) + dims
    inter = (probs * target).sum(dims)
    # 2 ((1 - b) |P| + b |G|) = 2 TP + 2 (1 - b) FP + 2 b FN: the Tversky index's, times 2 (b = 0.5: |P| + |G|)
    denom = 2 * ((1 - missed) * probs.sum(dims) + missed * target.sum(dims))
    dice = ((2 * inter + smooth) / (denom + smooth)).reshape(-1, probs.shape[1])  # B x C (1 x C for batch)
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
                     weights: Optional[Sequence[float]] = None, hardest: Optional[float] = None,
                     batch_dice: bool = False, missed: float = 0.5) -> torch.Tensor:
    """``regions``: (B, 3, ...) float masks WT, TC, ET; ``weights`` (one per region, normalised to
    sum 1 in both terms) make some regions count more than others; ``hardest`` (a share in (0, 1]):
    each region's cross-entropy is the mean over only that share of its voxels with the largest
    cross-entropy in the batch (the TopK loss of Wu et al., arXiv:1605.06885, as nnU-Net offers it:
    confident errors are not averaged away by the many easy background voxels); ``batch_dice``:
    the Dice term over the whole batch; ``missed``: the Tversky index's weight of missed voxels
    (:func:`soft_dice_loss`)."""
    dice = soft_dice_loss(torch.sigmoid(logits), regions, weights, batch=batch_dice, missed=missed)
    if weights is None and hardest is None:
        return dice + F.binary_cross_entropy_with_logits(logits, regions)
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
    return dice + (per_region * w).sum() / w.sum()
