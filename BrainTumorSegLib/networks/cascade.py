"""Coarse-to-fine cascade: a 2 mm region U-Net finds the tumor, a 1 mm one refines its labels.

Follows the 3D U-Net cascade of nnU-Net (Isensee F, Jaeger PF, Kohl SAA, Petersen J, Maier-Hein KH.
nnU-Net: a self-configuring method for deep learning-based biomedical image segmentation. Nature
Methods 18:203-211, 2021, doi:10.1038/s41592-020-01008-z; Methods, the "3D U-Net cascade", one of
its three configurations: a first U-Net on downsampled images, whose segmentation, upsampled to
full resolution, enters a second U-Net as extra input channels) and the localise-then-refine
stages of our DM-DA-Unet (:mod:`.dmda_unet`):

- stage 1, ``coarse``: :class:`ResUNet` on the working volume averaged down by ``factor`` (1 mm to
  2 mm) and z-scored again there, as its own preprocessing gives it a 2 mm volume
  (:meth:`CoarseToFine.coarse_volume`; ``segment`` crops the 1 mm volume from a multiple of
  ``factor``, ``crop_multiple``, so the blocks averaged are that 2 mm grid's voxels), in sliding
  windows of ``coarse_window`` (``0``: in one pass over the whole volume); its sigmoid WT /
  TC / ET probabilities are interpolated back onto the 1 mm grid (:meth:`CoarseToFine.guide`);
- stage 2, ``fine``: :class:`ResUNet` on the 1 mm volume with the three probabilities as extra
  channels, which corrects stage 1: its output is added to stage 1's logits (the probabilities'
  logits), so the cascade's labels are stage 1's wherever stage 2 adds nothing. It runs only in the
  box around stage 1's whole tumor plus ``margin`` voxels (at least one patch where the volume
  allows), and outside it the cascade's probabilities are stage 1's; where stage 1 finds nothing,
  stage 2 runs over the whole volume, so the cascade never looks at less than stage 2 alone would.
- ``refine="et"``: stage 2 corrects the enhancing tumor only, and only near stage 1's own (its
  correction weighed by stage 1's ET probability, widened by two voxels): the whole tumor and the
  tumor core stay stage 1's, and it runs only in the box around that neighbourhood (nowhere, when
  stage 1 finds no enhancing tumor). Built from what the full cascade did out of fold
  (docs/training.md, "A 1 mm cascade"): the 1 mm stage bettered the enhancing tumor of 21 of 24
  high-grade tumors, but widened hard whole tumors and gave enhancing spots to tumors without any.

In training only stage 2 learns (stage 1 is a trained 2 mm model, frozen; stage 2 starts from the
same weights, :meth:`CoarseToFine.start_from`); ``forward`` on a patch is stage 2, whose inputs are
cached with the guide channels once per case (``training.data.Guide``).

Departures, with reasons: nnU-Net feeds stage 1's one-hot segmentation; we feed its probabilities
(no threshold baked in, and the uncertainty at the border stays visible to stage 2). nnU-Net
preprocesses a second time at low resolution; we average the 1 mm working volume down (one
preprocessing for both stages). nnU-Net runs stage 2 over the whole image; we run it around the
tumor (the 1 mm brain is eight times the 2 mm one: on a CPU, the box is what makes 1 mm affordable).
nnU-Net trains stage 2 from scratch to predict the labels; ours predicts a correction to stage 1's
logits and starts from stage 1's weights with zero output heads, i.e. from stage 1's own labels (on
a 2-core CPU a shorter training has to suffice: a first run whose stage 2 predicted the labels
itself, at the network's learning rate, fell below stage 1 after 300 iterations).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..predict.sliding_window import sliding_window
from ..preprocess.normalise import zscore
from .base import NOWHERE, Box, SegmentationNetwork, box_around
from .resunet import ResUNet

_WIDTHS = {"channels": (16, 32, 64, 128, 128), "blocks": (1, 2, 2, 2, 2)}
REFINE = ("all", "et")  # what stage 2 corrects: every region, or the enhancing tumor near stage 1's
_ET_REACH = 2  # voxels (1 mm) beyond stage 1's enhancing tumor that ``refine="et"`` may add to


class CoarseToFine(SegmentationNetwork):
    output_kind = "sigmoid"
    out_channels = 3
    patch_size = (64, 64, 64)
    guide_channels = 3  # stage 1's WT, TC, ET probabilities, after the sequences
    aux_outputs = ResUNet.aux_outputs
    encoder_modules = ("fine.stem", "fine.stages")
    checkpoint_modules = ("fine.stages", "fine.decoders")
    paper = ("nnU-Net's 3D U-Net cascade (Isensee et al., Nature Methods 18:203-211, 2021) with the "
             "BraTS 2021 winners' region-based residual U-Net as both stages")
    training_defaults = ResUNet.training_defaults

    def __init__(self, coarse: Optional[Dict] = None, fine: Optional[Dict] = None, factor: int = 2,
                 margin: int = 16, coarse_window: int = 64, patch: int = 64, refine: str = "all") -> None:
        super().__init__()
        if refine not in REFINE:
            raise ValueError(f"refine must be one of {', '.join(REFINE)}, not {refine!r}")
        self.refine = refine
        self.coarse = ResUNet(in_channels=len(self.in_sequences), **dict(coarse or _WIDTHS))
        self.coarse.requires_grad_(False)
        self.fine = ResUNet(in_channels=len(self.in_sequences) + self.guide_channels, **dict(fine or _WIDTHS))
        self.factor, self.margin, self.coarse_window = int(factor), int(margin), int(coarse_window)
        self.crop_multiple = self.factor
        # stage 1 on the volume resampled, then z-scored (coarse_volume), at this factor and window
        self.guide_method = f"coarse-renormalised:{self.factor}:{self.coarse_window}"
        self.patch_size = (int(patch),) * 3
        self.divisor = self.fine.divisor

    @torch.no_grad()
    def start_from(self, stage1: SegmentationNetwork) -> None:
        """Both stages from a trained 2 mm :class:`ResUNet` of the same widths: stage 1 as it is;
        stage 2 with the same features, zero weights on the guide channels and zero output heads,
        so that the cascade starts as stage 1's own labels on the 1 mm grid and learns corrections."""
        state = stage1.state_dict()
        self.coarse.load_state_dict(state)
        fine = dict(state)
        stem = self.fine.state_dict()["stem.0.weight"]
        fine["stem.0.weight"] = torch.cat([state["stem.0.weight"], torch.zeros_like(stem[:, len(self.in_sequences):])], 1)
        for name in fine:
            if name.startswith(("head.", "ds_heads.")):
                fine[name] = torch.zeros_like(fine[name])
        self.fine.load_state_dict(fine)

    def train(self, mode: bool = True) -> "CoarseToFine":
        super().train(mode)
        self.coarse.eval()  # frozen: it returns plain logits, never training outputs
        return self

    def _forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        out: Dict = self.fine._forward(x)  # in training also a list of deep supervision logits
        guide = x[:, -self.guide_channels:].float()
        out["out"] = self._corrected(guide, out["out"])
        if "deep_supervision" in out:
            out["deep_supervision"] = [self._corrected(F.adaptive_avg_pool3d(guide, d.shape[2:]), d)
                                       for d in out["deep_supervision"]]
        return out

    def _corrected(self, guide: torch.Tensor, correction: torch.Tensor) -> torch.Tensor:
        """Stage 1's logits plus stage 2's correction: all of it, or (``refine="et"``) its enhancing
        tumor's alone, weighed by :meth:`_et_gate`."""
        if self.refine == "et":
            correction = torch.cat([torch.zeros_like(correction[:, :2]), correction[:, 2:] * self._et_gate(guide)], 1)
        return _logit(guide) + correction

    @staticmethod
    def _et_gate(guide: torch.Tensor) -> torch.Tensor:
        """Stage 1's ET probability, its largest within two voxels: where ET may change (one axis at
        a time: the same maximum, in half the time of a cubic window)."""
        gate = guide[:, 2:3]
        for axis in range(3):
            size = [1, 1, 1]
            size[axis] = 2 * _ET_REACH + 1
            gate = F.max_pool3d(gate, size, stride=1, padding=[n // 2 for n in size])
        return gate

    def loss(self, out: Dict[str, torch.Tensor], classes: torch.Tensor, epoch: int) -> torch.Tensor:
        return self.fine.loss(out, classes, epoch)

    @torch.no_grad()
    def guide(self, volume: torch.Tensor, coarse: Optional[SegmentationNetwork] = None) -> torch.Tensor:
        """Stage 1's (3, z, y, x) WT, TC, ET probabilities on the grid of a (C, z, y, x) ``volume``:
        by ``coarse`` when given (training: the fold model that did not see the case), else by this
        cascade's own stage 1."""
        net = (coarse or self.coarse).eval()
        size = volume.shape[1:]
        pad = [(-n) % self.factor for n in size]
        small = self.coarse_volume(F.pad(volume.float(), [p for ax in reversed(pad) for p in (0, ax)]))
        if self.coarse_window == 0:  # one pass: the network pads to its divisor itself
            probs = torch.sigmoid(net(small[None]).float())[0]
        else:
            probs = sliding_window(small, lambda b: torch.sigmoid(net(b).float()), (self.coarse_window,) * 3,
                                   self.out_channels, 0.5)
        up = F.interpolate(probs[None], scale_factor=self.factor, mode="trilinear", align_corners=False)[0]
        return up[(slice(None),) + tuple(slice(0, n) for n in size)]

    def coarse_volume(self, volume: torch.Tensor) -> torch.Tensor:
        """The (C, z, y, x) working volume as stage 1 saw its training cases: resampled to the coarse
        grid first, then z-scored over the brain there (every voxel with a nonzero sequence).

        Averaging the z-scored 1 mm volume alone would differ at the brain's edge: there the coarse
        voxels that preprocessing makes half from background are dark, while averages of z-scores
        with the zeros outside the brain are not (measured on Brats18_CBICA_ASE_1: a mean difference
        of 0.3-0.6 z at the edge, and stage 1's WT Dice 0.638 there fell to 0.565). Each sequence is
        taken back to a scale whose zero is the background's, with the brain's lowest value standing
        for zero (its true offset is not kept in the z-scores), averaged over ``factor``^3 blocks
        (as linear resampling to the block centres does) and z-scored again by preprocessing's own
        :func:`~BrainTumorSegLib.preprocess.normalise.zscore`."""
        brain = (volume != 0).any(0)
        if not brain.any():
            return F.avg_pool3d(volume[None], self.factor)[0]
        low = torch.stack([c[brain].min() for c in volume]).view(-1, 1, 1, 1)
        raw = torch.where(brain, volume - low, torch.zeros((), dtype=volume.dtype))
        small = F.avg_pool3d(raw[None], self.factor)[0]
        inside = F.avg_pool3d(brain[None, None].float(), self.factor)[0, 0] > 0
        mask = inside.cpu().numpy()
        return torch.from_numpy(np.stack([zscore(c, mask) for c in small.cpu().numpy()])).to(volume.device)

    def outside_box(self, data: torch.Tensor) -> torch.Tensor:
        """Stage 1's probabilities: the cascade's own wherever stage 2 did not look."""
        return data[-self.guide_channels:].float().clone()  # a new tensor, filled in by the caller

    def prepare(self, volume: torch.Tensor) -> Tuple[torch.Tensor, Optional[Box]]:
        """The sequences with stage 1's probabilities, and the box around its whole tumor (with
        ``refine="et"``: around where its enhancing tumor may change, ``NOWHERE`` without any)."""
        g = self.guide(volume)
        x = torch.cat([volume, g.to(volume.dtype)], 0)
        if self.refine == "et":  # the box of _et_gate > 0.5: stage 1's ET widened by the gate's reach
            box = box_around(g[2] > 0.5, self.margin + _ET_REACH, self.patch_size)
            return x, box if box is not None else NOWHERE
        return x, box_around(g[0] > 0.5, self.margin, self.patch_size)


def _logit(p: torch.Tensor) -> torch.Tensor:
    """Stage 1's logits back from its probabilities (clamped: a certain 0 or 1 stays finite);
    written with log and log1p, which OpenVINO converts (it has no ``aten::logit``)."""
    p = p.clamp(1e-4, 1 - 1e-4)
    return torch.log(p) - torch.log1p(-p)
