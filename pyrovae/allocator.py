"""Keep memory freed by large temporary tensors for reuse, instead of returning it to the system.

Evaluation on CPU allocates and frees the same few tensors of megabytes at every block of
particles: decoder activations, likelihood parameters, normal draws. glibc's ``malloc`` serves
such sizes by ``mmap`` (above its *mmap threshold*) and returns freed memory at the top of the
heap to the system (above its *trim threshold*); either way, the next block's tensors are fresh
pages, and the kernel faults and zeroes every 4 KiB page on first touch. On the 784-400-50 VAE
with K = 5000 importance samples that costs thousands of page faults per image, several
milliseconds of a 25 ms budget.

:func:`retain_freed_memory` sets the two thresholds (``mallopt``) to the largest mmap threshold
glibc's own dynamic rule reaches on 64-bit systems, 32 MiB, and twice that for trimming: the
values a long-running process that once freed a 32 MiB block has anyway. The process then keeps
up to 64 MiB of freed heap for reuse. Where the C library is not glibc (or ``mallopt`` is
missing) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

# mallopt parameters of glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: the mmap threshold set: DEFAULT_MMAP_THRESHOLD_MAX of glibc on 64-bit systems
MMAP_THRESHOLD = 32 * 2**20
#: the trim threshold set: what glibc's dynamic rule pairs with that mmap threshold
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD


@functools.cache
def retain_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (once per process); ``True`` if they were set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
