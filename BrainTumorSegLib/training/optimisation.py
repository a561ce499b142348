"""Each network's loss, optimiser and learning-rate schedule, as the network declares them."""
from __future__ import annotations

from typing import Dict

import torch

from ..networks import SegmentationNetwork, TrainingDefaults


def compute_loss(net: SegmentationNetwork, out: Dict, classes: torch.Tensor, epoch: int) -> torch.Tensor:
    """The network's own loss (its paper's) on its training-mode outputs, computed in fp32."""
    out = {k: (v.float() if torch.is_tensor(v) else [t.float() for t in v]) for k, v in out.items()}
    return net.loss(out, classes, epoch)


def make_optimizer(net: SegmentationNetwork, lr: float) -> torch.optim.Optimizer:
    """The network's optimiser over its trainable parameters."""
    d = net.training_defaults
    params = [p for p in net.parameters() if p.requires_grad]
    opt_class = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[d.optimizer]
    return opt_class(params, lr=lr, weight_decay=d.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, defaults: TrainingDefaults, total_epochs: int, lr: float):
    """The network's learning-rate schedule over ``total_epochs``."""
    if defaults.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_epochs), eta_min=lr * 0.01)
    if defaults.schedule == "step":
        assert defaults.step_lr is not None
        return torch.optim.lr_scheduler.MultiStepLR(opt, [max(1, int(total_epochs * 0.7))],
                                                    gamma=defaults.step_lr / defaults.lr)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
