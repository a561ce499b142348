"""Choosing a torch device: ``auto`` picks CUDA, then MPS, then CPU."""
from __future__ import annotations

from typing import List, Optional

import torch

from ..errors import InputError


def cpu_has_fast_bf16() -> bool:
    """True where oneDNN runs bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 would be slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(device: torch.device, cpu_bf16: bool) -> Optional[torch.dtype]:
    """The mixed precision to run at (training and inference alike): fp16 on CUDA, bf16 on a CPU
    when ``cpu_bf16`` (where the CPU runs it natively), else None (fp32)."""
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_bf16:
        return torch.bfloat16
    return None


def available() -> List[str]:
    devs = ["cpu"]
    if torch.cuda.is_available():
        devs += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devs.append("mps")
    return devs


def describe() -> str:
    """One line on the hardware torch sees."""
    parts = [f"torch {torch.__version__}", f"CPU threads {torch.get_num_threads()}"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            parts.append(f"cuda:{i} {p.name} {p.total_memory / 2 ** 30:.0f} GB")
    else:
        parts.append("no CUDA GPU")
    if "mps" in available():
        parts.append("Apple MPS")
    return ", ".join(parts)


def resolve(device: str = "auto") -> torch.device:
    """The torch device for ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; an error if absent."""
    d = (device or "auto").lower()
    if d == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda:0")
        if "mps" in available():
            return torch.device("mps")
        return torch.device("cpu")
    if d == "cpu":
        return torch.device("cpu")
    if d.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--device", f"{device} was asked for but torch sees no CUDA GPU ({describe()})")
        idx = int(d.split(":")[1]) if ":" in d else 0
        if idx >= torch.cuda.device_count():
            raise InputError("--device", f"{device}: only {torch.cuda.device_count()} CUDA device(s) present")
        return torch.device(f"cuda:{idx}")
    if d == "mps":
        if "mps" not in available():
            raise InputError("--device", "mps was asked for but is not available")
        return torch.device("mps")
    raise InputError("--device", f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
