"""AGSE-VNet, sections 3-4 of: Guan X, Yang G, Ye J, Yang W, Xu X, Jiang W, Lai X. 3D AGSE-VNet:
an automatic brain tumor MRI data segmentation framework. BMC Medical Imaging 22:6, 2022.
doi:10.1186/s12880-021-00728-8.

* VNet-style encoder of 5 blocks (16, 32, 64, 128, 256 channels; 1, 2, 3, 3, 3 convs) with the
  VNet residual add, a Squeeze-and-Excitation block (section 3.2, reduction m = 4) in every
  encoder block, 3x3x3 stride-2 convs to go down (section 3.4).
* Decoder of 4 blocks: stride-2 deconv up (section 3.5), an Attention Guided Filter in place of
  the concatenated skip (sections 3.3, 3.6), three convs with the residual add.
* Attention Guided Filter: attention block T = sigmoid(conv1(relu(conv1(I_l) + conv1(O_l)))),
  then the guided filter of Eqs. 6-8 with radius r = 16 and eps = 0.1^2, whose box filters are
  cumulative-sum differences (time independent of r); coefficients A_l, B_l are upsampled
  (trilinear) and the output is A_h * I + B_h.
* Normalisation and dropout in every block (dropout 0.5 as in section 4.2), ReLU, softmax over
  4 classes; patches 64 x 128 x 128 (z, y, x; section 4.3 gives 128 x 128 x 64).

Departures, with reasons:

* The paper leaves open how the upsampled decoder path and the filtered skip meet once the
  concatenation is gone: the block input is deconv(x) + AGF(I = skip, O = conv1x1(x)), so the
  decoder keeps both the coarse semantics and the filtered high-resolution detail.
* 3x3x3 convs in the blocks (VNet used 5x5x5) to keep the network trainable on a CPU; the paper
  does not state its kernel size inside blocks.
* Instance normalisation (the paper says only "normalization"), because patches come one or two
  per batch.
* Eq. 6 weights the fit by T^2; with the window sums W = box(T^2) the ridge term becomes eps / W
  per window (the weighted least-squares solution); the paper prints the unweighted Eq. 7.
* The final activation is softmax over 4 classes, as the loss (section 3.7) needs; section 3.5
  mentions a sigmoid.
"""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import SegmentationNetwork, TrainingDefaults, conv3d, norm3d
from .losses import onehot_of, soft_dice_loss


def box_sum(x: torch.Tensor, r: int) -> torch.Tensor:
    """Sum over a (2r+1)^3 window clipped at the borders, by cumulative sums: O(1) in ``r``."""
    for dim in (2, 3, 4):
        n = x.shape[dim]
        cs = torch.cumsum(x, dim)
        cs = torch.cat([torch.zeros_like(cs.narrow(dim, 0, 1)), cs], dim)
        idx = torch.arange(n, device=x.device)
        hi = torch.clamp(idx + r + 1, max=n)
        lo = torch.clamp(idx - r, min=0)
        x = cs.index_select(dim, hi) - cs.index_select(dim, lo)
    return x


class SqueezeExcitation(nn.Module):
    def __init__(self, c: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(1, c // reduction)
        self.fc = nn.Sequential(nn.Linear(c, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, c), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc(x.mean(dim=(2, 3, 4)))
        return x * s[:, :, None, None, None]


class AttentionGuidedFilter(nn.Module):
    def __init__(self, c: int, radius: int = 16, eps: float = 0.01) -> None:
        super().__init__()
        self.radius, self.eps = radius, eps
        self.wi = nn.Conv3d(c, c, 1)
        self.wo = nn.Conv3d(c, c, 1)
        self.psi = nn.Conv3d(c, 1, 1)

    def forward(self, guide: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        """``guide`` I at high resolution, ``low`` O at half resolution, same channels."""
        guide_l = F.interpolate(guide, size=low.shape[2:], mode="trilinear", align_corners=False)
        t = torch.sigmoid(self.psi(F.relu(self.wi(guide_l) + self.wo(low))))
        w = t * t
        r = self.radius
        sw = box_sum(w, r) + 1e-6
        mi = box_sum(w * guide_l, r) / sw
        mo = box_sum(w * low, r) / sw
        cov = box_sum(w * guide_l * low, r) / sw - mi * mo
        var = box_sum(w * guide_l * guide_l, r) / sw - mi * mi
        a = cov / (var + self.eps / sw)
        b = mo - a * mi
        count = box_sum(torch.ones_like(a[:, :1]), r)
        a_l, b_l = box_sum(a, r) / count, box_sum(b, r) / count
        a_h = F.interpolate(a_l, size=guide.shape[2:], mode="trilinear", align_corners=False)
        b_h = F.interpolate(b_l, size=guide.shape[2:], mode="trilinear", align_corners=False)
        return a_h * guide + b_h


def _convs(c: int, n: int, norm: str) -> nn.Sequential:
    layers: List[nn.Module] = []
    for _ in range(n):
        layers += [conv3d(c, c), norm3d(norm, c), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class EncoderBlock(nn.Module):
    def __init__(self, cin: int, c: int, n_convs: int, down: bool, norm: str, dropout: float) -> None:
        super().__init__()
        self.entry = (nn.Sequential(conv3d(cin, c, stride=2), norm3d(norm, c), nn.ReLU(inplace=True)) if down
                      else nn.Sequential(conv3d(cin, c), norm3d(norm, c), nn.ReLU(inplace=True)))
        self.convs = _convs(c, n_convs, norm)
        self.se = SqueezeExcitation(c, 4)
        self.drop = nn.Dropout3d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.entry(x)
        return self.drop(self.se(x + self.convs(x)))


class DecoderBlock(nn.Module):
    def __init__(self, cin: int, c: int, norm: str, dropout: float, radius: int, eps: float) -> None:
        super().__init__()
        self.up = nn.Sequential(nn.ConvTranspose3d(cin, c, 2, stride=2), norm3d(norm, c), nn.ReLU(inplace=True))
        self.project = nn.Conv3d(cin, c, 1)
        self.agf = AttentionGuidedFilter(c, radius, eps)
        self.convs = _convs(c, 3, norm)
        self.drop = nn.Dropout3d(dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        y = self.up(x) + self.agf(skip, self.project(x))
        return self.drop(y + self.convs(y))


class AGSEVNet(SegmentationNetwork):
    output_kind = "softmax"
    out_channels = 4
    patch_size = (64, 128, 128)
    divisor = 16
    aux_outputs = ()
    encoder_modules = ("encoders",)
    checkpoint_modules = ("encoders", "decoders")
    paper = "AGSE-VNet, Guan et al., BMC Med Imaging 2022, doi:10.1186/s12880-021-00728-8, sections 3-4"
    training_defaults = TrainingDefaults("adam", 1e-4, 0.0, "step", step_lr=3e-5,
                                         loss="categorical Dice, class weights [0.1, 1, 1, 1]")
    class_weights = (0.1, 1.0, 1.0, 1.0)  # background, NCR, ED, ET (section 3)

    def loss(self, out: Dict[str, torch.Tensor], classes: torch.Tensor, epoch: int) -> torch.Tensor:
        return soft_dice_loss(torch.softmax(out["out"], 1), onehot_of(classes), list(self.class_weights))

    def __init__(self, in_channels: int = 4, out_channels: int = 4, base: int = 16,
                 dropout: float = 0.5, radius: int = 16, eps: float = 0.01, norm: str = "instance") -> None:
        super().__init__()
        ch = [base * 2 ** i for i in range(5)]
        n_convs = [1, 2, 3, 3, 3]
        self.encoders = nn.ModuleList(
            EncoderBlock(in_channels if i == 0 else ch[i - 1], ch[i], n_convs[i], i > 0, norm, dropout)
            for i in range(5))
        self.decoders = nn.ModuleList(
            DecoderBlock(ch[i + 1], ch[i], norm, dropout, radius, eps) for i in reversed(range(4)))
        self.head = nn.Conv3d(ch[0], out_channels, 1)
        self.out_channels = out_channels

    def _forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        skips = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
        x = skips.pop()
        for dec in self.decoders:
            x = dec(x, skips.pop())
        return {"out": self.head(x)}
