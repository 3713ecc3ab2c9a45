"""glibc's allocator, set for PyTorch training on CPU.

glibc serves a block above its mmap threshold (128 KiB at first, rising to at most 32 MiB as such
blocks are freed) from fresh pages and hands them back to the kernel when it is freed, and it
returns the heap's free top above 128 KiB too. A CNN step allocates and frees activations and
gradients of a few MiB each, so every step faulted its pages in again: on the 2-core machine,
`oanet train` of the demo (3 epochs) spent 49 s of system time against 105 s of user time.
Keeping freed memory for the next step (the threshold at its 32 MiB ceiling, the heap trimmed
only above 1 GiB) cut the system time to 19 s and the wall time from 83 s to 66 s, with the same
weights (docs/benchmarks.md, "Training wall time: freed memory kept"). The price is resident
memory that stays at its peak until the process ends, which a training process reaches anyway.

The glibc variables MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ do the same from outside;
`mallopt` does it from inside, for the commands that train (`oanet train`, `oanet ablation`,
`oanet ocr distill` and its restarts' processes).
"""

from __future__ import annotations

import ctypes
import sys

# mallopt(3) parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's ceiling on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024
TOP_PAD_BYTES = 64 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Set the process's allocator as above; False where it is not glibc's (nothing changes)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)  # musl has none
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
                (M_TOP_PAD, TOP_PAD_BYTES))
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
