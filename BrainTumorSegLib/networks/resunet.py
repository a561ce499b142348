"""Region-based residual-encoder U-Net, the baseline in the style of the BraTS 2021 winners.

Follows the recipe of nnU-Net's BraTS 2021 entry (Luu HM, Park SH. Extending nn-UNet for brain
tumor segmentation. In: Brainlesion: Glioma, Multiple Sclerosis, Stroke and Traumatic Brain
Injuries, BrainLes 2021, LNCS 12963, Springer, 2022; and the residual encoders common among the
BraTS 2021 papers in BrainLes 2021, LNCS 12962):
a U-Net whose encoder stages are stacks of residual blocks (conv-IN-LReLU-conv-IN, + identity,
LReLU), strided 3x3x3 convs to go down, transposed convs to go up, one conv-IN-LReLU block per
decoder stage, instance norm, LeakyReLU(0.01), and three sigmoid outputs for the nested regions
WT, TC, ET (region-based training). Deep supervision heads on the two coarser decoder stages
are computed in training only.

Departures, with reasons: widths 16-32-64-128-256 and blocks 1-2-2-2-2 (nnU-Net uses 32-320
and more blocks) so that a 128^3 window runs in about a second on a laptop CPU. The loss is
region Dice + BCE by default; nnU-Net's batch Dice and TopK cross-entropy, region weights and the
Tversky index are training options (``batch_dice``, ``hardest_voxels``, ``region_weights``,
``missed_weight``), off unless a recipe sets them.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import SegmentationNetwork, TrainingDefaults, conv3d
from .losses import regions_of, sigmoid_dice_bce


def _cna(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(conv3d(cin, cout, stride=stride, bias=False), nn.InstanceNorm3d(cout, affine=True),
                         nn.LeakyReLU(0.01, inplace=True))


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _cna(cin, cout, stride)
        self.conv2 = nn.Sequential(conv3d(cout, cout, bias=False), nn.InstanceNorm3d(cout, affine=True))
        self.skip = (nn.Identity() if cin == cout and stride == 1 else
                     nn.Sequential(nn.Conv3d(cin, cout, 1, stride=stride, bias=False),
                                   nn.InstanceNorm3d(cout, affine=True)))
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.skip(x))


class ResUNet(SegmentationNetwork):
    output_kind = "sigmoid"
    out_channels = 3
    patch_size = (128, 128, 128)
    divisor = 16
    aux_outputs = ("deep_supervision",)
    encoder_modules = ("stem", "stages")
    checkpoint_modules = ("stages", "decoders")
    paper = "BraTS 2021 winners' region-based residual U-Net (BrainLes 2021, LNCS 12962-12963)"
    training_defaults = TrainingDefaults("adamw", 1e-3, 1e-4, "cosine",
                                         loss="region Dice + BCE, deep supervision weights 1, 0.5, 0.25")
    deep_supervision_weights = (0.5, 0.25)  # for the 1/2 and 1/4 resolution heads; the full one weighs 1
    # WT, TC, ET weights of the loss's terms; a training run may set its own (TrainConfig.region_weights)
    region_weights: Optional[Tuple[float, float, float]] = None
    # share of each region's voxels whose BCE counts, the hardest (None: all); TrainConfig.hardest_voxels
    hardest_voxels: Optional[float] = None
    # the Dice term over the whole batch rather than per patch; TrainConfig.batch_dice
    batch_dice: bool = False
    # the Tversky index's weight of missed voxels in the overlap term (0.5: the Dice); TrainConfig.missed_weight
    missed_weight: float = 0.5

    def __init__(self, in_channels: int = 4, out_channels: int = 3,
                 channels: Sequence[int] = (16, 32, 64, 128, 256),
                 blocks: Sequence[int] = (1, 2, 2, 2, 2)) -> None:
        super().__init__()
        self.stem = _cna(in_channels, channels[0])
        self.stages = nn.ModuleList()
        for i, (c, n) in enumerate(zip(channels, blocks)):
            cin = channels[max(i - 1, 0)]
            layers = [ResidualBlock(cin, c, stride=1 if i == 0 else 2)]
            layers += [ResidualBlock(c, c) for _ in range(n - 1)]
            self.stages.append(nn.Sequential(*layers))
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for i in reversed(range(len(channels) - 1)):
            self.ups.append(nn.ConvTranspose3d(channels[i + 1], channels[i], 2, stride=2))
            self.decoders.append(_cna(2 * channels[i], channels[i]))
        # deep supervision at 1/4 and 1/2 resolution (training only), final head at full resolution
        self.ds_heads = nn.ModuleList(nn.Conv3d(channels[i], out_channels, 1) for i in (2, 1))
        self.head = nn.Conv3d(channels[0], out_channels, 1)
        self.divisor = 2 ** (len(channels) - 1)
        self.out_channels = out_channels

    def loss(self, out: Dict[str, torch.Tensor], classes: torch.Tensor, epoch: int) -> torch.Tensor:
        regions = regions_of(classes)
        terms = (self.region_weights, self.hardest_voxels, self.batch_dice, self.missed_weight)
        loss = sigmoid_dice_bce(out["out"], regions, *terms)
        for weight, ds in zip(self.deep_supervision_weights, out.get("deep_supervision", [])):
            small = F.interpolate(regions, size=ds.shape[2:], mode="nearest")
            loss = loss + weight * sigmoid_dice_bce(ds, small, *terms)
        return loss / (1 + sum(self.deep_supervision_weights))

    def _forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = self.stem(x)
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        ds = []
        n = len(self.decoders)
        for k, (up, dec) in enumerate(zip(self.ups, self.decoders)):
            x = dec(torch.cat([skips.pop(), up(x)], 1))
            if self.training and n - 3 <= k < n - 1:
                ds.append(self.ds_heads[k - (n - 3)](x))
        out = {"out": self.head(x)}
        if self.training:
            out["deep_supervision"] = ds[::-1]  # finest first: 1/2, then 1/4 resolution
        return out
