"""glibc malloc settings for large, short-lived tensors.

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and
returns it with ``munmap``; the 100-250 MiB activations of each 3D window are then zero-filled by
the kernel again, page by page, on the next window: millions of minor page faults per case (about
40 s of system time for eight 128^3 windows on a 2-core AVX2 CPU). Keeping such blocks on the heap
(``M_MMAP_MAX`` 0) and not trimming it after each free lets the process reuse its memory. Labels
do not change (tested); resident memory stays at its high-water mark until the process ends,
which suits a command that segments and exits.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1   # mallopt parameters from glibc's <malloc.h>
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 1 << 30
ENV_SWITCH = "BRAINTUMORSEG_MALLOC_TUNING"  # "0" leaves glibc's defaults alone


def tune_glibc_malloc() -> bool:
    """Apply the settings where the C library is glibc on Linux; returns whether they were applied."""
    if not sys.platform.startswith("linux") or os.environ.get(ENV_SWITCH, "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        if not hasattr(libc, "gnu_get_libc_version"):  # glibc only (musl has no mallopt tuning of this kind)
            return False
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
