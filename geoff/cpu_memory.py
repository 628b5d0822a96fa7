"""Keep freed CPU memory in the process (glibc ``mallopt``) so that model calls stop
page-faulting.

PyTorch's CPU tensors come from ``malloc``. glibc serves blocks above its mmap threshold
(dynamic, at most 32 MB by default) with fresh ``mmap`` pages and gives them back on
``free``; it also trims the heap's top above 128 KB. A force call allocates and frees the
same large per-edge tensors every time, so each call faults every page in again and the
kernel zeroes it: measured on the 2-core machine (PaiNN, 864 Cu atoms, 36,944 edges, float32,
energy + forces), 735,000 minor faults and 1.5 s of system time per call, against 7,700
faults and 0.1 s with the thresholds raised (user time 3.9 -> 2.0 s). The peak memory is the
same; the process only keeps it between calls, as an MD run wants.

``keep_freed_memory()`` raises both thresholds once per process. It is a no-op off glibc
(macOS, musl) and when ``GEOFF_KEEP_FREED_MEMORY=0`` is set (e.g. a notebook that should hand
memory back between runs). ``GeoffCalculator`` calls it for CPU models.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

# Blocks below 1 GiB come from the heap and are reused; larger ones are still mmapped (a
# single tensor that large is rare and its page faults are small next to its compute).
MMAP_THRESHOLD = 1 << 30
# Never trim the heap's free top back to the system below 2 GiB (mallopt takes an int).
TRIM_THRESHOLD = (1 << 31) - 1

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once). True if they are set
    (now or by an earlier call), False where this is not glibc or it is switched off."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("GEOFF_KEEP_FREED_MEMORY", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # glibc only: musl has mallopt as a stub
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
