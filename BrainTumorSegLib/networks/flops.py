"""Parameter and FLOP counts, counted as the CGA U-Net paper counts them (section 4.3).

A convolution costs ``Cin/groups * prod(K) * prod(output size) * Cout`` (multiply-accumulates
counted once); a transposed convolution ``Cin * prod(K) * prod(input size) * Cout``; a matrix
product of ``A x B`` by ``B x C`` costs ``A * B * C``. Modules that multiply matrices report
their own count through an ``extra_flops`` attribute set during forward. Norms, activations,
pooling and element-wise operations are not counted, as in the paper.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(model: nn.Module, input_shape: Sequence[int], within: Optional[nn.Module] = None,
                train: bool = False) -> int:
    """FLOPs of one forward pass of ``model`` on a zero tensor of ``input_shape``.

    ``within`` restricts the count to the modules inside that submodule.
    """
    total = [0]
    allowed = set(id(m) for m in (within or model).modules())
    handles = []

    def conv_hook(mod, inp, out):
        if id(mod) not in allowed:
            return
        k = 1
        for v in mod.kernel_size:
            k *= v
        if isinstance(mod, (nn.ConvTranspose2d, nn.ConvTranspose3d)):
            total[0] += mod.in_channels * k * mod.out_channels * inp[0][0, 0].numel()
        else:
            total[0] += mod.in_channels // mod.groups * k * mod.out_channels * out[0, 0].numel()

    def extra_hook(mod, inp, out):
        if id(mod) in allowed:
            total[0] += int(getattr(mod, "extra_flops", 0))

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            handles.append(m.register_forward_hook(conv_hook))
        elif hasattr(m, "extra_flops"):
            handles.append(m.register_forward_hook(extra_hook))
    was_training = model.training
    model.train(train)
    try:
        with torch.no_grad():
            model(torch.zeros(*input_shape))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total[0]
