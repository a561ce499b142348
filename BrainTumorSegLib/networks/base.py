"""What every network declares, so inference and training treat all of them the same way."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from ..read.cases import SEQUENCES

Output = Union[torch.Tensor, Dict[str, torch.Tensor]]
Box = Tuple[slice, slice, slice]
NOWHERE: Box = (slice(0, 0), slice(0, 0), slice(0, 0))  # a box no window goes to


def box_around(mask: torch.Tensor, margin: int, minimum: Sequence[int]) -> Optional[Box]:
    """The bounding box of a (z, y, x) ``mask`` plus ``margin`` voxels, widened (centred) to at least
    ``minimum`` where the volume allows; None when the mask is empty."""
    if not bool(mask.any()):
        return None
    idx = torch.nonzero(mask)
    lo, hi = idx.min(0).values.tolist(), (idx.max(0).values + 1).tolist()
    box = []
    for a, b, n, m in zip(lo, hi, mask.shape, minimum):
        a, b = max(0, a - margin), min(n, b + margin)
        if b - a < m:
            c = (a + b) // 2
            a = max(0, min(c - m // 2, n - m))
            b = min(n, a + m)
        box.append(slice(a, b))
    return box[0], box[1], box[2]


@dataclass(frozen=True)
class TrainingDefaults:
    """How a network's paper trains it: optimiser, learning rate, weight decay, schedule."""

    optimizer: str            # "adam" or "adamw"
    lr: float
    weight_decay: float
    schedule: str             # "cosine" (to lr/100), "step" (to step_lr at 70 % of the epochs) or "constant"
    step_lr: Optional[float] = None
    loss: str = ""            # the loss in words, written into the run folder


class SegmentationNetwork(nn.Module):
    """Base class.

    Subclasses set the class attributes and implement ``_forward(x) -> dict`` with at least
    ``"out"`` (logits). ``forward`` pads the input to a multiple of ``divisor`` and crops every
    full-resolution output back, so any input size works. In eval mode ``forward`` returns only
    the logits tensor; in train mode it returns the dict with the auxiliary outputs named in
    ``aux_outputs`` (deep supervision heads, attention maps), which are not computed in eval mode.
    """

    output_kind: str = "softmax"          # "softmax": classes 0..3 (bg, NCR, ED, ET); "sigmoid": WT, TC, ET
    out_channels: int = 4
    in_sequences: Tuple[str, ...] = SEQUENCES  # channel order: nnU-Net's for BraTS
    patch_size: Tuple[int, int, int] = (128, 128, 128)  # z, y, x
    divisor: int = 16
    aux_outputs: Tuple[str, ...] = ()
    guide_channels: int = 0  # input channels after the sequences that a first stage makes (a cascade's)
    guide_method: str = ""   # names how guide() makes them: in a training cache's key, so a change remakes it
    paper: str = ""
    # Submodule names (dotted): the contracting path, frozen by fine-tuning's --freeze-encoder, and
    # the blocks whose activations are recomputed in backward under gradient checkpointing.
    encoder_modules: Tuple[str, ...] = ()
    checkpoint_modules: Tuple[str, ...] = ()
    training_defaults: ClassVar[TrainingDefaults]

    def forward(self, x: torch.Tensor) -> Output:
        size = x.shape[2:]
        pad = [(-s) % self.divisor for s in size]
        if any(pad):
            x = F.pad(x, [p for ax in reversed(pad) for p in (0, ax)])
        out = self._forward(x)
        if any(pad):
            crop = (Ellipsis,) + tuple(slice(0, s) for s in size)
            out = {k: (v[crop] if torch.is_tensor(v) and v.dim() == x.dim() and v.shape[2:] == x.shape[2:] else v)
                   for k, v in out.items()}
        return out if self.training else out["out"]

    def _forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, out: Dict[str, torch.Tensor], classes: torch.Tensor, epoch: int) -> torch.Tensor:
        """The paper's loss on the training-mode outputs ``out`` (fp32) for target ``classes``
        (B, z, y, x) in 0..3 (background, NCR, ED, ET) at ``epoch`` (0-based)."""
        raise NotImplementedError  # pragma: no cover - every network defines its own

    def guide(self, volume: torch.Tensor) -> torch.Tensor:
        """The (guide_channels, z, y, x) channels a first stage adds to a (C, z, y, x) volume."""
        raise NotImplementedError(f"{type(self).__name__} has no first stage")  # pragma: no cover

    def outside_box(self, data: torch.Tensor) -> torch.Tensor:
        """The (out_channels, z, y, x) probabilities where :meth:`prepare`'s box keeps the windows
        away, for the (C, z, y, x) volume it returned: none (a first stage may know better). A new
        tensor each time: the caller fills the box in."""
        return torch.zeros((self.out_channels,) + tuple(data.shape[1:]), device=data.device)

    # the working grid's brain crop starts at a multiple of this many voxels: a cascade whose first
    # stage averages blocks of that size sees the blocks a coarser grid's voxels are (its own grid)
    crop_multiple = 1

    def prepare(self, volume: torch.Tensor) -> Tuple[torch.Tensor, Optional[Box]]:
        """What the sliding window runs over, and where: the (C, z, y, x) volume with any
        ``guide_channels`` appended, and the box the windows go to (None: everywhere; ``NOWHERE``:
        no window at all, the probabilities are :meth:`outside_box`'s). A cascade makes both with
        its first stage; every other network looks at the whole volume as given."""
        return volume, None

    def _named_blocks(self, names: Tuple[str, ...]) -> List[nn.Module]:
        blocks: List[nn.Module] = []
        for name in names:
            m = self.get_submodule(name)
            blocks.extend(m if isinstance(m, nn.ModuleList) else [m])
        return blocks

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the contracting path (``encoder_modules``)."""
        for m in self._named_blocks(self.encoder_modules):
            yield from m.parameters()

    def enable_gradient_checkpointing(self) -> int:
        """Recompute the activations of ``checkpoint_modules`` in backward instead of keeping them
        (less memory, about a third more compute; training only). Returns how many blocks."""
        blocks = self._named_blocks(self.checkpoint_modules)
        for m in blocks:
            if getattr(m, "_checkpointed", False):
                continue
            inner = m.forward

            def forward(*args, _inner=inner, _m=m):
                if _m.training and torch.is_grad_enabled():
                    return torch.utils.checkpoint.checkpoint(_inner, *args, use_reentrant=False)
                return _inner(*args)

            m.forward = forward  # the instance attribute leaves the state_dict untouched
            setattr(m, "_checkpointed", True)  # noqa: B010 - a plain flag on a torch Module
        return len(blocks)

    def spec(self) -> Dict:
        return {"output_kind": self.output_kind, "out_channels": self.out_channels,
                "in_sequences": list(self.in_sequences), "patch_size": list(self.patch_size),
                "divisor": self.divisor, "aux_outputs": list(self.aux_outputs), "paper": self.paper}


def conv3d(cin: int, cout: int, k: int = 3, stride: int = 1, bias: bool = True) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, k, stride=stride, padding=k // 2, bias=bias)


def norm3d(kind: str, c: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(c)
    if kind == "instance":
        return nn.InstanceNorm3d(c, affine=True)
    raise ValueError(f"unknown norm {kind!r}")
