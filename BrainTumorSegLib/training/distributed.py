"""Where a process sits in a torchrun job: NCCL with one GPU per process, gloo on CPUs."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Tuple

import torch

from ..predict import devices


@dataclass
class Distributed:
    """Where this process sits in a torchrun job (rank 0 of 1 when run alone)."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    started_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def init_distributed(device: str = "auto") -> Tuple[Distributed, torch.device]:
    """Under torchrun (``WORLD_SIZE`` > 1) join the process group: NCCL with one GPU per process
    (``LOCAL_RANK``), gloo on CPUs. Alone: the device ``devices.resolve`` picks."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(), devices.resolve(device)
    pref = (device or "auto").lower()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if pref.startswith("cuda") or (pref == "auto" and torch.cuda.is_available()):
        devices.resolve("cuda")  # a one-line error when there is no GPU
        dev = torch.device(f"cuda:{local % torch.cuda.device_count()}")
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")  # MPS has no DistributedDataParallel backend
    started = not torch.distributed.is_initialized()
    if started:
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Distributed(torch.distributed.get_rank(), torch.distributed.get_world_size(), local, started), dev
