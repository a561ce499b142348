"""Probabilities from the networks: sliding windows over the working grid (batched, Gaussian
weighted), optional mirror test-time augmentation (all 8 flips), the members of an ensemble
averaged; on the backend and device chosen, with bf16 on CPUs that have it when asked.
"""
from __future__ import annotations

import contextlib
import itertools
import threading
from typing import Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import Cancelled, InputError
from ..models import bundles
from ..networks.base import NOWHERE
from ..progress import Progress
from ..segment_options import SegmentOptions
from . import backends, devices
from .onednn import onednn_convolutions
from .sliding_window import sliding_window, tiles_cover


def _flips(tta: bool) -> List[Tuple[int, ...]]:
    if not tta:
        return [()]
    axes = (2, 3, 4)
    return [c for n in range(4) for c in itertools.combinations(axes, n)]


class _Predictor:
    """Runs one network on batches with the right backend, precision, flips and activation."""

    def __init__(self, bundle: bundles.Bundle, device: torch.device, flips, cpu_bf16: bool,
                 backend: str = "torch", window: Tuple[int, ...] = (), windows: int = 1) -> None:
        self.net = bundle.network.to(device).eval()
        self.kind = bundle.manifest.output
        self.device = device
        self.flips = flips
        self.cpu_bf16 = cpu_bf16
        self.backend: str = "torch"
        self._openvino: Optional[backends.Forward] = None
        sha = bundle.manifest.weights_sha256
        if backend != "torch" and sha and window:  # the exported network is cached by its weights' digest
            shape = (1, len(bundle.manifest.in_sequences) + self.net.guide_channels) + tuple(window)
            self.backend, self._openvino = backends.choose(backend, device, self.net, sha, shape,
                                                           self._torch_forward, windows * len(flips))

    def _torch_forward(self, x: torch.Tensor) -> torch.Tensor:
        with _inference(self.device, self.cpu_bf16):
            return self.net(x).float()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.device)
        acc: Optional[torch.Tensor] = None
        for f in self.flips:
            xi = torch.flip(x, f) if f else x
            logits = self._openvino(xi) if self._openvino is not None else self._torch_forward(xi)
            p = self.kind.activation(logits)
            p = torch.flip(p, f) if f else p
            acc = p if acc is None else acc + p
        assert acc is not None  # at least the identity flip
        return acc / len(self.flips)


@contextlib.contextmanager
def _inference(device: torch.device, cpu_bf16: bool) -> Iterator[None]:
    """No gradients, the device's mixed precision (none: fp32) and, for fp32 on a CPU, oneDNN convolutions."""
    dtype = devices.autocast_dtype(device, cpu_bf16)
    amp = torch.autocast("cpu", enabled=False) if dtype is None else torch.autocast(device.type, dtype=dtype)
    with torch.inference_mode(), amp, onednn_convolutions(device, dtype):
        yield


def _predict(data: torch.Tensor, bundle: bundles.Bundle, device: torch.device, opts: SegmentOptions,
             progress: Optional[Progress], cancel: Optional[threading.Event], out_device: torch.device,
             stage: str, used: List[str]) -> torch.Tensor:
    """One network's probabilities over ``data``: sliding windows of its patch, or (``opts.window``
    whole) one pass over the whole volume, which the network pads to its divisor itself."""
    bf16 = devices.cpu_has_fast_bf16() if opts.precision == "auto" else opts.precision == "bf16"
    window = tuple(bundle.manifest.patch_size)
    net = bundle.network.to(device).eval()

    def prog(done: int, total: int) -> None:
        if progress:
            progress(stage, done / total)

    prog(0, 1)  # shown while a cascade's first stage runs (one pass: nothing else is reported before the end)
    with _inference(device, bf16):  # a cascade's first stage may add channels and narrow where the windows go
        data, box = net.prepare(data.to(device))
    data = data.float()
    if box == NOWHERE:
        prog(1, 1)
        return net.outside_box(data).to(out_device)
    region = tuple(data.shape[1:]) if box is None else tuple(b.stop - b.start for b in box)
    whole = opts.window == "whole"
    pred = _Predictor(bundle, device, _flips(opts.tta), bf16, "torch" if whole else opts.backend, window,
                      tiles_cover(region, window, opts.overlap))
    used.append(pred.backend)
    channels = pred.kind.channels
    sub = data if box is None else data[(slice(None),) + box]
    if whole:
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        probs = pred(sub[None])[0].float().to(out_device)
        prog(1, 1)
    else:
        probs = sliding_window(sub, pred, window, channels, opts.overlap, opts.batch_size,
                               progress=prog, cancel=cancel, out_device=out_device)
    if box is None:
        return probs
    out = net.outside_box(data).to(out_device)
    out[(slice(None),) + box] = probs
    return out


class Prediction(NamedTuple):
    probabilities: np.ndarray
    device: str
    notes: List[str]
    backend: str        # torch, openvino, or both joined by "+" for an ensemble that used both


def predict_probabilities(data: np.ndarray, models: Sequence[bundles.Bundle], device: torch.device,
                          opts: SegmentOptions, progress: Optional[Progress] = None,
                          cancel: Optional[threading.Event] = None) -> Prediction:
    """Average probabilities of ``models`` over a preprocessed (C, z, y, x) array.

    On CUDA out-of-memory: retry with stitching on the CPU, then entirely on the CPU.
    """
    kinds = {m.manifest.output_kind for m in models}
    if len(kinds) != 1:
        raise InputError(None, "an ensemble must combine models of one output kind (all softmax or all sigmoid)")
    x = torch.from_numpy(data)
    notes: List[str] = []
    attempts = [(device, device)]
    if device.type == "cuda":
        attempts += [(device, torch.device("cpu")), (torch.device("cpu"), torch.device("cpu"))]
    for k, (dev, out_dev) in enumerate(attempts):
        try:
            total: Optional[torch.Tensor] = None
            used: List[str] = []
            for i, m in enumerate(models):
                p = _predict(x, m, dev, opts, progress, cancel, out_dev, f"predict {i + 1}/{len(models)}", used)
                total = p if total is None else total + p
            assert total is not None  # at least one model
            probs = (total / len(models)).cpu().numpy()
            return Prediction(probs, str(dev), notes, "+".join(dict.fromkeys(used)))
        except torch.cuda.OutOfMemoryError:  # pragma: no cover - needs a GPU
            torch.cuda.empty_cache()
            if k + 1 == len(attempts):
                raise InputError(None, "out of GPU memory even with CPU stitching, and CPU fallback failed") from None
            nxt = attempts[k + 1]
            notes.append(f"out of GPU memory on {dev}; retrying with {'CPU stitching' if nxt[0].type == 'cuda' else 'the CPU'}")
    raise AssertionError("unreachable")
