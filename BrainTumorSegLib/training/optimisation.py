"""Each network's loss, optimiser and learning-rate schedule, as the network declares them."""
from __future__ import annotations

from typing import Dict, Optional

import torch

from ..errors import InputError
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


SCHEDULES = ("cosine", "step", "constant")


def schedule_of(defaults: TrainingDefaults, schedule: Optional[str] = None) -> str:
    """``schedule`` checked against the network's defaults, else the network's own."""
    schedule = defaults.schedule if schedule is None else schedule
    if schedule not in SCHEDULES:
        raise InputError(None, f"unknown learning-rate schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if schedule == "step" and defaults.step_lr is None:
        raise InputError(None, "a step schedule needs the network's own step learning rate; this network has none")
    return schedule


def make_scheduler(opt: torch.optim.Optimizer, defaults: TrainingDefaults, total_epochs: int, lr: float,
                   schedule: Optional[str] = None) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule over ``total_epochs``: ``schedule``, else the network's own."""
    schedule = schedule_of(defaults, schedule)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_epochs), eta_min=lr * 0.01)
    if schedule == "step":
        assert defaults.step_lr is not None  # schedule_of checked it
        return torch.optim.lr_scheduler.MultiStepLR(opt, [max(1, int(total_epochs * 0.7))],
                                                    gamma=defaults.step_lr / defaults.lr)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
