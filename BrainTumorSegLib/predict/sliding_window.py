"""Sliding-window prediction over a volume with Gaussian weighting and configurable overlap."""
from __future__ import annotations

import itertools
import threading
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import Cancelled


def window_starts(size: int, window: int, overlap: float) -> List[int]:
    """Start positions of windows covering ``size`` (the last one flush with the end)."""
    if size <= window:
        return [0]
    step = max(1, int(round(window * (1.0 - overlap))))
    n = int(np.ceil((size - window) / step)) + 1
    # spread the windows evenly so the last ends exactly at the border
    return [int(round(i * (size - window) / (n - 1))) for i in range(n)]


def gaussian_importance(window: Sequence[int], sigma_scale: float = 0.125) -> torch.Tensor:
    """Gaussian weight map (sigma = ``sigma_scale`` x window), max 1, no zeros."""
    axes = []
    for n in window:
        x = torch.arange(n, dtype=torch.float32) - (n - 1) / 2.0
        axes.append(torch.exp(-0.5 * (x / max(n * sigma_scale, 1e-3)) ** 2))
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    w = w / w.max()
    return torch.clamp(w, min=float(w[w > 0].min()))


def sliding_window(volume: torch.Tensor, predictor: Callable[[torch.Tensor], torch.Tensor],
                   window: Sequence[int], out_channels: int, overlap: float = 0.5,
                   batch_size: int = 1, gaussian: bool = True,
                   progress: Optional[Callable[[int, int], None]] = None,
                   cancel: Optional[threading.Event] = None,
                   out_device: Optional[torch.device] = None) -> torch.Tensor:
    """Weighted average of ``predictor`` over windows of a (C, z, y, x) ``volume``.

    Volumes smaller than the window are zero-padded (centred) and cropped back. Returns
    (out_channels, z, y, x) on ``out_device`` (default: the volume's device).
    """
    c, *size = volume.shape
    win = [int(w) for w in window]
    pad = [max(0, w - s) for w, s in zip(win, size)]
    if any(pad):
        pads = []
        for p in reversed(pad):
            pads += [p // 2, p - p // 2]
        volume = torch.nn.functional.pad(volume, pads)
    full = volume.shape[1:]
    dev = out_device or volume.device
    acc = torch.zeros((out_channels,) + tuple(full), dtype=torch.float32, device=dev)
    norm = torch.zeros(tuple(full), dtype=torch.float32, device=dev)
    weight = (gaussian_importance(win) if gaussian else torch.ones(win)).to(dev)
    starts = list(itertools.product(*[window_starts(s, w, overlap) for s, w in zip(full, win)]))
    done = 0
    for i in range(0, len(starts), batch_size):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        chunk = starts[i:i + batch_size]
        batch = torch.stack([volume[(slice(None),) + tuple(slice(s, s + w) for s, w in zip(st, win))]
                             for st in chunk])
        pred = predictor(batch).float().to(dev)
        for st, p in zip(chunk, pred):
            sl = tuple(slice(s, s + w) for s, w in zip(st, win))
            acc[(slice(None),) + sl] += p * weight
            norm[sl] += weight
        done += len(chunk)
        if progress:
            progress(done, len(starts))
    out = acc / norm
    if any(pad):
        crop = tuple(slice(p // 2, p // 2 + s) for p, s in zip(pad, size))
        out = out[(slice(None),) + crop]
    return out


def tiles_cover(shape: Tuple[int, ...], window: Sequence[int], overlap: float) -> int:
    """Number of windows for a volume of ``shape``."""
    return int(np.prod([len(window_starts(max(s, w), w, overlap)) for s, w in zip(shape, window)]))
