"""Keep freed memory inside the process (glibc malloc) so repeated rollouts stop faulting in fresh pages.

Why: every rollout allocates the same large buffers again (prepacked weights, ~0.5 GB; logits,
6 MB a decode step). glibc serves blocks above its mmap threshold (adaptive, at most 32 MB) with
a fresh ``mmap`` and gives memory at the top of its heap back to the kernel past the trim
threshold, so those buffers come back as new pages that the kernel must fault in and zero, one
4 KB page at a time. On the embedded model, a steady-state ``fused`` rollout of 8 × 4 takes
hundreds of thousands of minor faults without this and none with it
(``test_allocator_page_faults`` in docs/performance.md). PyTorch's CPU tuning guide recommends the
same thing through jemalloc or tcmalloc; this keeps glibc and sets two of its documented
parameters (``mallopt(3)``).

The setting is process-wide and stays: freed memory is kept for reuse rather than returned, so
resident memory stays near its peak (the peak itself is unchanged: it is what the process needed
at once). Set ``PEFTHUB_KEEP_FREED_MEMORY=0`` to leave malloc alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: mallopt(3) parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap, so they are reused (the LM head's prepacked weight of
#: a 150k-vocabulary 1.5B model is ~0.9 GB; larger blocks are still mapped and unmapped).
MMAP_THRESHOLD_BYTES = 1 << 30
#: Free memory at the top of the heap kept rather than returned (mallopt takes an int).
TRIM_THRESHOLD_BYTES = 2**31 - 1

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True if they are in effect.

    A no-op (False) off Linux/glibc, or when ``PEFTHUB_KEEP_FREED_MEMORY=0``.
    """
    global _applied
    if _applied is None:
        _applied = False
        if os.environ.get("PEFTHUB_KEEP_FREED_MEMORY", "1") != "0" and sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
                return False
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
                mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return _applied
