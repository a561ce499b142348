"""Training and fine-tuning, one job per module:

* ``config``: :class:`TrainConfig`, the settings of a run
* ``data``: case checks, the preprocessed cache, patch sampling
* ``augmentation``: the named augmentation sets, thick slices, tighter brain masks, partial coverage
* ``optimisation``: each network's own loss, optimiser and schedule
* ``validation``: full sliding-window inference on the validation cases, BraTS Dice
* ``checkpoint``: atomic checkpoints loaded with ``weights_only``, a digest of the weights, compact copies
* ``pack``: cached cases in one folder, to train where the raw cases are not
* ``distributed``: torchrun (NCCL on GPUs, gloo on CPUs)
* ``loop``: :func:`train`, the steps of a run, and the exported bundle's manifest
* ``finetune``: :func:`finetune`, continuing from a bundle
"""
from .augmentation import AUGMENTATIONS, augment
from .checkpoint import compact_checkpoint, load_checkpoint, save_checkpoint, weights_digest
from .config import TrainConfig
from .data import CachedCase, Guide, PatchDataset, cache_case, check_cases, sample_patch
from .distributed import Distributed, init_distributed
from .finetune import FINETUNE_LR_FACTOR, finetune
from .loop import run_manifest, train
from .optimisation import compute_loss, make_optimizer, make_scheduler
from .pack import PackedCase, is_pack, read_pack, write_pack
from .validation import validate

__all__ = ["TrainConfig", "AUGMENTATIONS",
           "CachedCase", "Guide", "PatchDataset", "augment", "cache_case", "check_cases", "sample_patch",
           "compute_loss", "make_optimizer", "make_scheduler", "validate", "load_checkpoint", "save_checkpoint",
           "weights_digest", "Distributed", "init_distributed", "train", "run_manifest", "finetune",
           "FINETUNE_LR_FACTOR", "compact_checkpoint", "PackedCase", "is_pack", "read_pack", "write_pack"]
