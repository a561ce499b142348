"""DM-DA-Unet: a two-stage cascade, section 3 of the DM-DA-Unet paper (a DM-DA-based cascade for
glioma segmentation on 2D ResUnet, evaluated on BraTS 2018 five-fold and BraTS 2017 online). Its
title, venue and DOI could not be identified from the copy we have (seeds/dm-da-unet-paper.txt,
which starts at the abstract); the sections cited here are that text's. The same design, under the
name "Dual Multidimensional Dense Attention Unet" together with 2DResUnet, is the subject of a
Chinese master's thesis whose abstract is indexed at globethesis.com (record 2404330590983233,
http://globethesis.com/?t=2404330590983233); no journal version was found.

Stage 1, ``DenseUnet2D`` (section 3.2): on axial slices, encoder dense blocks of three 3x3 convs
with BN and PReLU whose inputs are the concatenation of all earlier outputs, stride-2 convs
instead of pooling, decoder dense blocks that start with a 1x1 conv, softmax over 4 classes.
It locates the tumor.

Stage 2, ``DAUnet3D`` (sections 3.3-3.4) on a 128^3 cube centred on the tumor: an input module
(3x3x3 conv, IN, LeakyReLU), 3 dense blocks each after a stride-2 conv, an attention block on
every skip (a 3x3x3 conv, then a trunk residual block T and a soft-mask branch S of a 3x3x3 and a
1x1x1 conv with sigmoid; output (1 + S) * T, Eq. 2), upsampling layers, localization modules
(concat, 1x1x1 conv, residual add), multi-scale fusion of the decoder's segmentation maps
(upscaled and added), a 1x1x1 output conv and sigmoid per region (WT, TC, ET).

``DMDACascade`` runs both: stage 1 over every axial slice, the tumor's bounding box (plus a
margin) from its argmax, then stage 2 over that box in 128^3 cubes. When the box is larger than
one cube, cubes tile it with overlap and Gaussian weighting; when stage 1 finds nothing, stage 2
still looks at the whole volume (a 2D miss must not hide a tumor), so the cascade never returns
less than stage 2 alone would see.

Departures, with reasons: widths 16-32-64-128 (3D) and 16-32-64-128 (2D), which the paper does
not give; dropout 0.1 in the attention branches (Figure 4 shows dropout without a rate); the
dense blocks end with a 1x1x1 transition back to the block width so channel counts stay fixed;
TTA by 3D rotations (section 3.6) belongs to inference and is replaced there by mirror TTA.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..predict.sliding_window import sliding_window
from .base import Box, SegmentationNetwork, TrainingDefaults, box_around, conv3d
from .losses import onehot_of, regions_of, soft_dice_loss

# ----------------------------------------------------------------------------- stage 1 (2D)

def _cbp(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2), nn.BatchNorm2d(cout), nn.PReLU(cout))


class DenseBlock2D(nn.Module):
    """Three 3x3 conv-BN-PReLU layers, each fed the concatenation of all earlier outputs."""

    def __init__(self, cin: int, c: int, decoder: bool = False) -> None:
        super().__init__()
        self.entry = nn.Conv2d(cin, c, 1) if decoder else None
        c0 = c if decoder else cin
        self.l1 = _cbp(c0, c)
        self.l2 = _cbp(c0 + c, c)
        self.l3 = _cbp(c0 + 2 * c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.entry is not None:
            x = self.entry(x)
        y1 = self.l1(x)
        y2 = self.l2(torch.cat([x, y1], 1))
        return self.l3(torch.cat([x, y1, y2], 1))


class DenseUnet2D(nn.Module):
    """Stage 1: axial-slice DenseUnet, softmax over 4 classes (background, NCR, ED, ET)."""

    divisor = 8

    def __init__(self, in_channels: int = 4, out_channels: int = 4, channels: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        c = list(channels)
        self.enc = nn.ModuleList([DenseBlock2D(in_channels, c[0])])
        self.down = nn.ModuleList()
        for i in range(1, len(c)):
            self.down.append(_cbp(c[i - 1], c[i], stride=2))
            self.enc.append(DenseBlock2D(c[i], c[i]))
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in reversed(range(len(c) - 1)):
            self.up.append(nn.ConvTranspose2d(c[i + 1], c[i], 2, stride=2))
            self.dec.append(DenseBlock2D(2 * c[i], c[i], decoder=True))
        self.head = nn.Conv2d(c[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        pad = [(-s) % self.divisor for s in size]
        x = F.pad(x, [0, pad[1], 0, pad[0]])
        skips = []
        for i, enc in enumerate(self.enc):
            if i:
                x = self.down[i - 1](x)
            x = enc(x)
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([skips.pop(), up(x)], 1))
        return self.head(x)[..., : size[0], : size[1]]


# ----------------------------------------------------------------------------- stage 2 (3D)

def _cil(cin: int, cout: int, k: int = 3, stride: int = 1, dropout: float = 0.0) -> nn.Sequential:
    layers = [conv3d(cin, cout, k, stride), nn.InstanceNorm3d(cout, affine=True), nn.LeakyReLU(0.01, inplace=True)]
    if dropout:
        layers.append(nn.Dropout3d(dropout))
    return nn.Sequential(*layers)


class DenseBlock3D(nn.Module):
    """Two conv-IN-LeakyReLU layers with dense concatenation, then a 1x1x1 transition."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.l1 = _cil(c, c)
        self.l2 = _cil(2 * c, c)
        self.transition = nn.Conv3d(3 * c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y1 = self.l1(x)
        y2 = self.l2(torch.cat([x, y1], 1))
        return self.transition(torch.cat([x, y1, y2], 1))


class AttentionSkip(nn.Module):
    """Figure 4: conv, then trunk residual block T and soft mask S; output (1 + S) * T."""

    def __init__(self, c: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.entry = conv3d(c, c)
        self.trunk = nn.Sequential(_cil(c, c, dropout=dropout), _cil(c, c, dropout=dropout))
        self.mask = nn.Sequential(_cil(c, c, dropout=dropout), nn.Conv3d(c, c, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.entry(x)
        t = x + self.trunk(x)
        return (1 + self.mask(x)) * t


class Localization(nn.Module):
    """Concat attention skip and upsampled features, 1x1x1 conv, simple residual block."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.merge = nn.Conv3d(2 * c, c, 1)
        self.res = _cil(c, c)

    def forward(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        x = self.merge(torch.cat([skip, up], 1))
        return x + self.res(x)


class DAUnet3D(SegmentationNetwork):
    """Stage 2: 3D dense attention U-Net, sigmoid regions WT, TC, ET."""

    output_kind = "sigmoid"
    out_channels = 3
    patch_size = (128, 128, 128)
    divisor = 8
    aux_outputs = ()
    paper = "DM-DA-Unet stage 2, the DM-DA-Unet paper (title unknown: see the docstring) sections 3.3-3.4"

    def __init__(self, in_channels: int = 4, out_channels: int = 3, channels: Sequence[int] = (16, 32, 64, 128),
                 dropout: float = 0.1) -> None:
        super().__init__()
        c = list(channels)
        self.input_module = _cil(in_channels, c[0])
        self.enc0 = DenseBlock3D(c[0])
        self.down = nn.ModuleList(_cil(c[i], c[i + 1], stride=2) for i in range(3))
        self.enc = nn.ModuleList(DenseBlock3D(c[i + 1]) for i in range(3))
        self.att = nn.ModuleList(AttentionSkip(c[i], dropout) for i in range(3))
        self.up = nn.ModuleList(nn.Sequential(nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False),
                                              _cil(c[i + 1], c[i])) for i in range(3))
        self.loc = nn.ModuleList(Localization(c[i]) for i in range(3))
        self.seg = nn.ModuleList(nn.Conv3d(c[i], out_channels, 1) for i in range(3))
        self.out_channels = out_channels

    def _forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        skips = [self.enc0(self.input_module(x))]
        for down, enc in zip(self.down, self.enc):
            skips.append(enc(down(skips[-1])))
        y = skips.pop()
        fused: Optional[torch.Tensor] = None
        for i in reversed(range(3)):
            y = self.loc[i](self.att[i](skips[i]), self.up[i](y))
            s = self.seg[i](y)
            fused = s if fused is None else s + F.interpolate(fused, scale_factor=2, mode="trilinear", align_corners=False)
        assert fused is not None
        return {"out": fused}


# ----------------------------------------------------------------------------- the cascade

class DMDACascade(SegmentationNetwork):
    """Both stages. ``forward`` on a patch runs stage 2 alone (as in training); ``predict`` runs
    the cascade on a whole (preprocessed) volume."""

    output_kind = "sigmoid"
    out_channels = 3
    patch_size = (128, 128, 128)
    divisor = 8
    aux_outputs = ("axial",)
    # freezing keeps the stage-1 locator and stage 2's contracting path
    encoder_modules = ("stage1", "stage2.input_module", "stage2.enc0", "stage2.down", "stage2.enc")
    checkpoint_modules = ("stage2.enc", "stage2.loc")
    paper = "DM-DA-Unet, the DM-DA-Unet paper (title unknown: see the docstring) section 3"
    training_defaults = TrainingDefaults("adam", 1e-3, 1e-5, "cosine",
                                         loss="stage 1: generalised Dice + weighted CE on axial slices; "
                                              "stage 2: region Dice")
    stage1_class_weights = (0.1, 1.0, 1.0, 1.0)  # the weighted cross-entropy of stage 1

    def loss(self, out: Dict[str, torch.Tensor], classes: torch.Tensor, epoch: int) -> torch.Tensor:
        loss = soft_dice_loss(torch.sigmoid(out["out"]), regions_of(classes))
        # stage 1 on the patch's axial slices: generalised Dice + weighted cross-entropy
        logits2 = out["axial"]
        onehot = onehot_of(classes)
        dims = (0, 2, 3, 4)
        w = 1.0 / (onehot.sum(dims) ** 2 + 1.0)
        p = torch.softmax(logits2, 1)
        gdl = 1 - 2 * (w * (p * onehot).sum(dims)).sum() / ((w * (p + onehot).sum(dims)).sum() + 1e-6)
        wce = F.cross_entropy(logits2, classes, weight=torch.tensor(self.stage1_class_weights, device=classes.device))
        return loss + gdl + wce

    def __init__(self, in_channels: int = 4, cube: int = 128, margin: int = 8,
                 channels_2d: Sequence[int] = (16, 32, 64, 128),
                 channels_3d: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        self.stage1 = DenseUnet2D(in_channels, 4, channels_2d)
        self.stage2 = DAUnet3D(in_channels, 3, channels_3d)
        self.cube = int(cube)
        self.margin = int(margin)
        self.patch_size = (self.cube,) * 3

    def _forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = {"out": self.stage2._forward(x)["out"]}
        if self.training:  # stage 1 on the patch's axial slices, back as (B, 4, z, y, x), for its loss
            b, _, z = x.shape[:3]
            logits = self.stage1(x.permute(0, 2, 1, 3, 4).flatten(0, 1))
            out["axial"] = logits.unflatten(0, (b, z)).permute(0, 2, 1, 3, 4)
        return out

    @torch.no_grad()
    def locate(self, volume: torch.Tensor, slice_batch: int = 16) -> torch.Tensor:
        """Stage 1 on every axial slice of a (C, z, y, x) volume: boolean tumor mask (z, y, x)."""
        masks = []
        for z in range(0, volume.shape[1], slice_batch):
            slices = volume[:, z:z + slice_batch].permute(1, 0, 2, 3)  # slices as a batch
            masks.append(self.stage1(slices).argmax(1) > 0)
        return torch.cat(masks, 0)

    def roi(self, mask: torch.Tensor) -> Optional[Box]:
        """Bounding box of the stage-1 mask plus the margin, at least one cube where possible."""
        return box_around(mask, self.margin, (self.cube,) * 3)

    @torch.no_grad()
    def region_of_interest(self, volume: torch.Tensor) -> Optional[Box]:
        """Stage 1's box (see :meth:`roi`): what ``segment`` slides stage 2 over; None when stage 1
        finds nothing, and stage 2 then looks at the whole volume."""
        return self.roi(self.locate(volume).cpu())

    def prepare(self, volume: torch.Tensor) -> Tuple[torch.Tensor, Optional[Box]]:
        """The volume as given (no extra channels) and stage 1's box (:meth:`region_of_interest`)."""
        return volume, self.region_of_interest(volume)

    @torch.no_grad()
    def predict(self, volume: torch.Tensor, overlap: float = 0.5) -> Dict[str, object]:
        """Region logits (3, z, y, x) for a (C, z, y, x) volume, and where stage 2 looked."""
        box = self.region_of_interest(volume)
        region = box if box is not None else tuple(slice(0, n) for n in volume.shape[1:])
        sub = volume[(slice(None),) + region]
        logits = sliding_window(sub, lambda b: self.stage2(b), (self.cube,) * 3, 3, overlap)
        out = torch.full((3,) + tuple(volume.shape[1:]), -20.0, dtype=logits.dtype)
        out[(slice(None),) + region] = logits
        return {"logits": out, "found_by_stage1": box is not None,
                "region": [(s.start, s.stop) for s in region]}
