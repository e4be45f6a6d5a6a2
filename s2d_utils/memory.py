"""Giving memory back to the OS: a long notebook's resident size otherwise only ever grows."""

from __future__ import annotations

import ctypes
import gc
import sys
from contextlib import contextmanager
from typing import Iterator


def free_memory() -> None:
    """Collect unreachable objects and give freed heap memory back to the OS.

    glibc keeps freed small and mid-sized blocks (most of a model's layer tensors, K/V buffers,
    activations) in its heap, so the resident size of a long notebook only ever grows; trimming
    after each large phase lets the next phase reuse the machine's memory instead of adding to it.
    """
    gc.collect()
    trim_heap()


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter: allocations at least this large get their own mapping
HEAP_DYNAMIC_MAX = 32 << 20  # where glibc's dynamic threshold ends up on 64-bit (its DEFAULT_MMAP_THRESHOLD_MAX)


@contextmanager
def own_mappings(threshold: int = 64 << 10) -> Iterator[None]:
    """Inside the block, allocations of ``threshold`` bytes or more get their own memory mapping
    (glibc's ``M_MMAP_THRESHOLD``), returned to the OS the moment they are freed, instead of heap
    blocks that fragmentation keeps resident. Training needs it: measured on the 0.5B model, one
    step over 4 judge prompts of 760 tokens peaked at 10.0 GB resident with glibc's defaults, 6.8 GB
    trimming after each pass, 2.9 GB with 64 KB mappings; notebook 04's three students (one a seed)
    peaked at 7.4 GB with 1 MB mappings and 6.6 GB with 64 KB, with the same losses and time. Afterwards the threshold is left at
    glibc's dynamic maximum (32 MB), where a long-running process's threshold ends up anyway.
    A no-op where the C library is not glibc."""
    libc = None
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(M_MMAP_THRESHOLD, int(threshold))
        except (OSError, AttributeError):
            libc = None
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(M_MMAP_THRESHOLD, HEAP_DYNAMIC_MAX)


def trim_heap() -> None:
    """Give the heap's free pages back to the OS (glibc's ``malloc_trim``; a no-op elsewhere).
    Cheap enough to call every training step, where freed activations otherwise stay resident."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to trim
            pass
