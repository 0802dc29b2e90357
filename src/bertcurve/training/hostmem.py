"""Host memory allocator settings for training on a CPU.

glibc hands every large block (32 MiB and up, and smaller ones once its
heap is trimmed) straight back to the kernel when it is freed, so the next
step's tensor of the same size is a fresh mapping whose every page faults in
and is zeroed again. A training step frees and reallocates the same
activations thousands of times; in a virtual machine those faults cost more
than the arithmetic of most elementwise operations (a GELU over a
4096 x 2048 tensor: 24 ms, 7 ms without the faults).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_",
                  "MALLOC_TOP_PAD_", "GLIBC_TUNABLES", "LD_PRELOAD")


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of unmapping it; True when it did.

    Serves every block from the heap (no per-block mappings) and never trims
    the heap, so the process holds on to its peak footprint, which a training
    loop reaches again every step anyway. Does nothing off Linux, without
    glibc, or when the user already chose allocator settings (a ``MALLOC_*_``
    variable, ``GLIBC_TUNABLES`` or a preloaded allocator such as jemalloc).
    """
    if not sys.platform.startswith("linux") or any(os.environ.get(k) for k in _USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)) and bool(mallopt(_M_MMAP_MAX, 0))
