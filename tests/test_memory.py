"""keep_freed_memory: a freed catalogue-sized tensor's memory stays with the allocator for reuse."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

PROGRAM = """
import ctypes, torch
from lightning_rec.memory import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
applied = keep_freed_memory()
tensor = torch.ones(16_000_000)  # 64 MB
del tensor
print(applied, libc.mallinfo2().fordblks >> 20)  # MB freed but kept in the heap
"""


def kept_megabytes(keep: bool) -> tuple[str, int]:
    env = {**os.environ, "LIGHTNING_REC_KEEP_FREED_MEMORY": "1" if keep else "0"}
    applied, kept = subprocess.run(
        [sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return applied, int(kept)


def has_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")  # glibc >= 2.33
    except OSError:
        return False


@pytest.mark.skipif(not has_mallinfo2(), reason="glibc's allocator")
def test_a_freed_large_tensor_stays_with_the_allocator_instead_of_going_back_to_the_os():
    applied, kept = kept_megabytes(keep=True)
    assert applied == "True" and kept >= 60
    applied, kept = kept_megabytes(keep=False)  # glibc's default: an mmap per large block, unmapped when freed
    assert applied == "False" and kept < 10
