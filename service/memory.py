"""What the process holds, and giving freed heap back to the system."""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import resource

import psutil

_MB = 1024 * 1024


def rss_mb() -> float:
    """Resident set size of this process now, in MiB."""
    return psutil.Process().memory_info().rss / _MB


def peak_rss_mb() -> float:
    """Highest resident set size this process has had, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


_LIBC = _libc()


def release_memory() -> bool:
    """Collect garbage and return free heap pages to the OS (glibc ``malloc_trim``).

    Returns True when ``malloc_trim`` ran (glibc), False elsewhere (musl, macOS).
    """
    gc.collect()
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is None:
        return False
    trim(0)
    return True
