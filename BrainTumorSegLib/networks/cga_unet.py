"""CGA U-Net: Category Guided Attention U-Net, after Li J, Yu H, Chen C, Ding M, Zha S. Category
guided attention network for brain tumor segmentation in MRI. Physics in Medicine & Biology 67,
2022. doi:10.1088/1361-6560/ac628a (arXiv:2203.15383).

Follows Table 1 (sections 3.1-3.4):

* Encoder: InitConv (3x3x3 conv 4->16, dropout 0.2), residual EnBlocks
  (BN, ReLU, conv3, BN, ReLU, conv3, +) repeated 1, 2, 2, 4 times at 16, 32, 64, 128 channels,
  EnDown 3x3x3 stride-2 convs between them.
* Decoder: DeUp (conv 1x1x1 halving channels, 2x2x2 transposed conv, concat with the encoder
  block, conv 1x1x1), DeBlock (one residual block) at 64, 32, 16 channels, EndConv 1x1x1 to 4
  classes, softmax.
* Attention conv path: three 3x3x3 stride-2 convs from the input (4->16->16->C_l=4) give the
  attention map S of size C_l x 16^3 (for a 128^3 input), supervised (MSE, in the loss) by the
  down-sampled one-hot ground truth.
* Supervised Attention Module on the 128 x 16^3 bottleneck: masks M_k = softmax_k(S); prototypes
  p_k by masked average pooling (Eq. 7); each voxel rebuilt as sum_k M_k p_k (Eq. 8); the
  inter-class distance D = sum_{i<j} ||p_i - p_j|| (Eq. 9) is returned for
  loss_inter = log(1 / (1 + D)) (Eq. 10), which the training recipe adds after epoch 20.

Counted as the paper counts (``flops.py``), for a 4 x 128^3 input: 4.76 M parameters (paper
4.77 M) and about 151.6 G FLOPs (paper 151.12 G); the SAM costs 0.69 G FLOPs (paper 0.675 G).

Departures, with reasons:

* Table 1 names the DeUp convs "Conv3"; with 3x3x3 kernels the network would have 5.32 M
  parameters, with 1x1x1 kernels (as in TransBTS, whose U-Net Table 1 reproduces) it has the
  paper's 4.77 M, so we use 1x1x1. The table's DeBlock3 size (16 x 128^3) is a typo for 64 x 32^3,
  and DeUp1 concatenates EnBlock1 (not EnBlock2) by the sizes involved.
* SAM parameters: Table 1's attention path has 4*27*16 + 16*27*16 + 16*27*4 = 10,368 parameters
  (0.010 M), not the 0.095 M of Table 3. The two paper figures cannot both hold for a path of
  three stride-2 convs: its FLOPs are dominated by the first conv at 64^3, and any extra
  0.085 M parameters would cost at least 0.085 M x 16^3 = 0.35 G more FLOPs at the coarsest
  level. We match the FLOPs (0.69 G vs 0.675 G) and Table 1; Table 3's own "rate 2" row lists
  0.01 M, the figure of this path.
* The paper does not say how S becomes masks, nor whether the rebuilt map replaces the feature
  map: we use softmax over classes (weights sum to 1 per voxel, as one-hot targets do) and add
  the rebuilt map to the features (residual), which keeps early training stable.
* Inputs need sizes divisible by 8; others are zero-padded and the outputs cropped.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import SegmentationNetwork, TrainingDefaults, conv3d, norm3d
from .losses import onehot_of, softmax_dice_ce


class ResBlock(nn.Module):
    """BN, ReLU, Conv3, BN, ReLU, Conv3, + (Table 1's EnBlock / DeBlock)."""

    def __init__(self, c: int, norm: str = "batch") -> None:
        super().__init__()
        self.body = nn.Sequential(norm3d(norm, c), nn.ReLU(inplace=True), conv3d(c, c),
                                  norm3d(norm, c), nn.ReLU(inplace=True), conv3d(c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class DeUp(nn.Module):
    """Conv 1x1x1, ConvT 2x2x2 stride 2, concat with the skip, Conv 1x1x1."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.reduce = nn.Conv3d(cin, cout, 1)
        self.up = nn.ConvTranspose3d(cout, cout, 2, stride=2)
        self.fuse = nn.Conv3d(2 * cout, cout, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([skip, self.up(self.reduce(x))], 1))


class SupervisedAttention(nn.Module):
    """Intra-class update by masked average pooling and the inter-class distance (Eqs. 7-10)."""

    def __init__(self) -> None:
        super().__init__()
        self.extra_flops = 0

    def forward(self, feats: torch.Tensor, att_logits: torch.Tensor):
        b, c = feats.shape[:2]
        k = att_logits.shape[1]
        masks = torch.softmax(att_logits, 1).flatten(2)                 # B x K x N
        x = feats.flatten(2)                                            # B x C x N
        protos = torch.einsum("bkn,bcn->bkc", masks, x) / (masks.sum(-1, keepdim=True) + 1e-6)
        rebuilt = torch.einsum("bkn,bkc->bcn", masks, protos).view_as(feats)
        n = x.shape[-1]
        self.extra_flops = 2 * k * n * c  # the two matrix products, per sample
        diff = protos[:, :, None, :] - protos[:, None, :, :]
        dist = torch.sqrt((diff ** 2).sum(-1) + 1e-12)                 # B x K x K
        iu = torch.triu_indices(k, k, 1)
        distance = dist[:, iu[0], iu[1]].sum(-1)                        # D per sample
        return feats + rebuilt, protos, distance


class CGAUNet(SegmentationNetwork):
    output_kind = "softmax"
    out_channels = 4
    patch_size = (128, 128, 128)
    divisor = 8
    aux_outputs = ("attention", "distance")
    # the attention path and the SAM stay trainable: they are supervised by their own loss
    encoder_modules = ("init_conv", "en1", "down1", "en2", "down2", "en3", "down3", "en4")
    checkpoint_modules = ("en1", "en2", "en3", "en4", "de3", "de2", "de1")
    paper = "CGA U-Net, Li et al., Phys Med Biol 2022, doi:10.1088/1361-6560/ac628a, sections 3-4, Tables 1 and 3"
    training_defaults = TrainingDefaults("adam", 1e-3, 1e-5, "constant",
                                         loss="softmax Dice + MSE on the attention map "
                                              "(+ inter-class loss after epoch 20)")
    inter_class_from_epoch = 20   # the inter-class loss joins after this epoch (section 4)
    inter_class_weight = 0.1

    def loss(self, out: Dict[str, torch.Tensor], classes: torch.Tensor, epoch: int) -> torch.Tensor:
        loss = softmax_dice_ce(out["out"], classes) - F.cross_entropy(out["out"], classes)  # softmax Dice only
        z, y, x = out["attention"].shape[2:]
        target = F.adaptive_avg_pool3d(onehot_of(classes), (z, y, x))
        loss = loss + F.mse_loss(out["attention"], target)
        if epoch >= self.inter_class_from_epoch:
            loss = loss + self.inter_class_weight * torch.log(1.0 / (1.0 + out["distance"])).mean()
        return loss

    def __init__(self, in_channels: int = 4, out_channels: int = 4, base: int = 16,
                 dropout: float = 0.2, norm: str = "batch") -> None:
        super().__init__()
        c1, c2, c3, c4 = base, 2 * base, 4 * base, 8 * base
        self.init_conv = nn.Sequential(conv3d(in_channels, c1), nn.Dropout3d(dropout))
        self.en1 = ResBlock(c1, norm)
        self.down1 = conv3d(c1, c2, stride=2)
        self.en2 = nn.Sequential(ResBlock(c2, norm), ResBlock(c2, norm))
        self.down2 = conv3d(c2, c3, stride=2)
        self.en3 = nn.Sequential(ResBlock(c3, norm), ResBlock(c3, norm))
        self.down3 = conv3d(c3, c4, stride=2)
        self.en4 = nn.Sequential(*[ResBlock(c4, norm) for _ in range(4)])
        self.att_path = nn.Sequential(conv3d(in_channels, c1, stride=2), conv3d(c1, c1, stride=2),
                                      conv3d(c1, out_channels, stride=2))
        self.sam = SupervisedAttention()
        self.up3, self.de3 = DeUp(c4, c3), ResBlock(c3, norm)
        self.up2, self.de2 = DeUp(c3, c2), ResBlock(c2, norm)
        self.up1, self.de1 = DeUp(c2, c1), ResBlock(c1, norm)
        self.end_conv = nn.Conv3d(c1, out_channels, 1)
        self.out_channels = out_channels

    def _forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        e1 = self.en1(self.init_conv(x))
        e2 = self.en2(self.down1(e1))
        e3 = self.en3(self.down2(e2))
        e4 = self.en4(self.down3(e3))
        att = self.att_path(x)
        e4, _, distance = self.sam(e4, att)
        d = self.de3(self.up3(e4, e3))
        d = self.de2(self.up2(d, e2))
        d = self.de1(self.up1(d, e1))
        out = {"out": self.end_conv(d)}
        if self.training:
            out["attention"] = torch.softmax(att, 1)
            out["distance"] = distance
        return out
