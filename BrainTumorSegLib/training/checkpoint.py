"""Atomic checkpoints (loaded without executing code) and a digest of the weights."""
from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, Optional

import torch

from ..models.bundles import half_precision
from ..write.atomic import replacing
from .config import TrainConfig

# A run folder's checkpoints: its last epoch, its best validated epoch, and the compact copy a run
# brings back from another machine (``compact_checkpoint``).
LAST = "checkpoint_last.pt"
BEST = "checkpoint_best.pt"
COMPACT = "checkpoint_fp16.pt"


def save_checkpoint(path: str, state: Dict) -> None:
    with replacing(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str) -> Dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def exported_checkpoint(cfg: TrainConfig, out_dir: str) -> str:
    """The checkpoint whose weights a run exports: its last, which holds the weights' average when
    the run averages them (``cfg.average_from``, whatever ``cfg.select_best``); otherwise its best
    validated one when ``cfg.select_best`` and there is one."""
    best = os.path.join(out_dir, BEST)
    if cfg.select_best and cfg.average_from is None and os.path.exists(best):
        return best
    return os.path.join(out_dir, LAST)


def exported_weights(state: Dict) -> Dict[str, torch.Tensor]:
    """A checkpoint's weights as its run exports them: the average where it keeps one."""
    return state.get("average", state["model"])


def weights_digest(net: torch.nn.Module) -> str:
    """sha256 over the state dict (names, then bytes in name order)."""
    h = hashlib.sha256()
    for k, v in sorted(net.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def compact_checkpoint(src: str, dst: str, settings: Optional[Dict[str, Any]] = None) -> str:
    """A checkpoint's exported weights (:func:`exported_weights`) in fp16 with its epoch, best score
    and history (and ``settings``, plain values the run was trained with), without the optimiser's
    state or a second copy of the weights (a sixth of a last checkpoint's size or less), to bring a
    run's result back from another machine (loading casts the weights back to the network's fp32, as
    the shipped fp16 bundles are loaded)."""
    state = load_checkpoint(src)
    small = {k: state[k] for k in ("epoch", "best", "history") if k in state}
    if settings:
        small["settings"] = dict(settings)
    small["model"] = half_precision(exported_weights(state))
    save_checkpoint(dst, small)
    return dst
