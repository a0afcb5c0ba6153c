"""Keep freed chunk buffers in the process for reuse instead of returning them to the OS.

A streaming merge allocates and frees buffers of the same few sizes thousands of times (one
per source chunk, one per result, a few temporaries). glibc serves allocations above its
mmap threshold (dynamic, from 128 KiB) with fresh ``mmap`` calls, so every chunk pays for
page faults and the kernel zeroing its pages: on a merge of five 1.1 GB models that was
over half the wall time. Raising the threshold to glibc's maximum (32 MiB on 64-bit) and
not trimming the heap lets ``malloc`` hand the same pages back out; peak memory is
unchanged (the same number of buffers are alive at once), it is only kept until exit.

Only glibc has ``mallopt``; elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's ceiling for M_MMAP_THRESHOLD on 64-bit systems (HEAP_MAX_SIZE / 2).
MMAP_THRESHOLD_MAX = 32 * 1024**2
_tuned = False


def reuse_freed_buffers() -> bool:
    """Tune glibc's allocator once per process; True when it was (or already is) tuned."""
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _tuned = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**30))
    return _tuned
