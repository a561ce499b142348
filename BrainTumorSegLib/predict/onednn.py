"""Every 3-D convolution of a CPU fp32 forward through oneDNN.

For a batch of one, torch sends a 3-D convolution to its reference kernel (im2col and a matrix
product) unless batch x channels x depth x height exceeds 20,480: our networks' 4-channel stem on a
64^3 window and every convolution at 16^3 and below take that path. On this project's residual
U-Net (64^3 windows, 2 threads, kernels held to AVX2 as on a laptop without AVX-512) oneDNN is
1.5-4.7x faster on those shapes and a whole forward about 30 % faster, with logits within 1e-4
(docs/benchmarks.md). bf16 and GPU forwards already use oneDNN or their own kernels: untouched.
"""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch
from torch.overrides import TorchFunctionMode


def _triple(v) -> list:
    v = list(v) if isinstance(v, (tuple, list)) else [v]
    return v * 3 if len(v) == 1 else v


class _OneDNNConv3d(TorchFunctionMode):
    """Sends ``conv3d`` on CPU fp32 tensors with numeric padding to ``aten::mkldnn_convolution``
    (torch's own choice again for the rest of the context should oneDNN refuse a call)."""

    refused = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.conv3d and not self.refused:
            a = dict(zip(("input", "weight", "bias", "stride", "padding", "dilation", "groups"), args), **kwargs)
            x, w, padding = a["input"], a["weight"], a.get("padding", 0)
            needs_grad = torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)
            if x.device.type == "cpu" and x.dtype == w.dtype == torch.float32 and x.dim() == 5 \
                    and not isinstance(padding, str) and not needs_grad:  # oneDNN's op here has no backward
                try:
                    return torch.ops.aten.mkldnn_convolution(
                        x.contiguous(), w.contiguous(), a.get("bias"), _triple(padding), _triple(a.get("stride", 1)),
                        _triple(a.get("dilation", 1)), a.get("groups", 1))
                except RuntimeError:  # a build or CPU whose oneDNN lacks this case
                    self.refused = True
        return func(*args, **kwargs)


def onednn_convolutions(device: torch.device, dtype) -> ContextManager:
    """A context in which the CPU fp32 forward's 3-D convolutions run on oneDNN (``dtype`` None:
    fp32); a no-op context elsewhere or where torch was built without oneDNN."""
    if device.type != "cpu" or dtype not in (None, torch.float32) or not torch.backends.mkldnn.is_available() \
            or not torch.backends.mkldnn.enabled:
        return contextlib.nullcontext()
    return _OneDNNConv3d()
