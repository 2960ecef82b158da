"""Keep freed memory inside the process (glibc malloc) so repeated rollouts stop faulting in fresh pages.

Raises glibc's mmap and trim thresholds (``mallopt(3)``) once per process, so the large buffers
every rollout allocates again are reused instead of mapped, zeroed and faulted in anew; resident
memory then stays near its peak. ``PEFTHUB_KEEP_FREED_MEMORY=0`` leaves malloc alone. The effect is
measured by ``test_allocator_page_faults`` (docs/performance.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: mallopt(3) parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap, so they are reused (large enough for the prepacked LM
#: head of the supported models; larger blocks are still mapped and unmapped).
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
