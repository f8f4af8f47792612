"""Keep freed memory in the process: catalogue-sized tensors are allocated and freed many times a step."""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Make glibc reuse freed memory instead of returning it to the operating system.

    glibc serves each allocation above 32 MB with a fresh mmap and unmaps it when freed, so every
    catalogue-sized temporary (1,000 users x 10,000 items of float32 is 40 MB) is page-faulted in
    anew: on 2 cores that made a PPO update about 1.5x slower (`benchmarks/rl.py
    --return-freed-memory`). The process then keeps its peak memory, as it would with jemalloc or
    tcmalloc, which PyTorch's CPU performance guide recommends for the same reason. The CLI calls
    this; LIGHTNING_REC_KEEP_FREED_MEMORY=0 turns it off. Returns whether it applied (glibc only).
    """
    if os.environ.get("LIGHTNING_REC_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False
