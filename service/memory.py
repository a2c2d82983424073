"""What the process holds, and how its buffers come from and go back to the system."""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import resource
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_MB = 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Resident set size of this process now, in MiB (Linux's /proc/self/statm)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE / _MB


def cgroup_limit_mb() -> float | None:
    """This process's memory cgroup limit in MiB (v2 or v1), None where there is none."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2
            candidate = Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.max"
        elif "memory" in controllers.split(","):
            candidate = Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.limit_in_bytes"
        else:
            continue
        try:
            value = candidate.read_text().strip()
        except OSError:
            continue
        if value != "max" and int(value) < 2**60:
            return int(value) / _MB
    return None


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
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
# glibc's largest mmap threshold on 64-bit: buffers up to this size can come from the heap.
_HEAP_BUFFERS = 32 * 1024 * 1024


def trim_heap() -> bool:
    """Return the heap's free pages to the system (glibc ``malloc_trim``).

    Returns True when it ran (glibc), False elsewhere (musl, macOS).
    """
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is None:
        return False
    trim(0)
    return True


def release_memory() -> bool:
    """Collect garbage, then :func:`trim_heap`."""
    gc.collect()
    return trim_heap()


@contextmanager
def heap_buffers() -> Iterator[None]:
    """Within: buffers up to 32 MiB come from malloc's heap, where freed ones are reused;
    on the way out the heap's free pages go back to the system.

    For steps that make many short-lived numpy temporaries. The server starts with a
    fixed ``MALLOC_MMAP_THRESHOLD_`` of 64 KiB (service/http/server.py), which gives every
    larger buffer a mapping of its own, unmapped when freed: that keeps a model run's
    peak at what is live, but each new buffer costs a page fault per 4 KiB it touches.
    Does nothing in a process started without a fixed threshold: there glibc's own
    sliding threshold already keeps such buffers on the heap, and could not be restored.
    The threshold is process-wide, and this is not reentrant: it suits a process that
    works on one image at a time, as the server does (service/http/gate.py).
    """
    mallopt = getattr(_LIBC, "mallopt", None)
    start = os.environ.get("MALLOC_MMAP_THRESHOLD_", "")
    if mallopt is None or not start.isdigit():
        yield
        return
    mallopt(_M_MMAP_THRESHOLD, _HEAP_BUFFERS)
    try:
        yield
    finally:
        mallopt(_M_MMAP_THRESHOLD, int(start))
        trim_heap()


_MADV_DONTNEED = 4  # <sys/mman.h> on Linux


def drop_mapped_pages(paths: list[Path]) -> int:
    """Drop this process's resident pages of its read-only file mappings of ``paths`` (files, or
    folders whose files count), and the files' clean pages from the page cache, which a memory
    cgroup charges too; returns the MiB of mappings dropped. Linux only (0 elsewhere).

    For weights an engine read at load and keeps its own packed copy of (OpenVINO's float32
    constants, mapped from an IR's ``.bin`` or its compiled blob): the mapping stays valid, and
    a page that is read again is read back from the file.
    """
    madvise = getattr(_LIBC, "madvise", None)
    if madvise is None or not Path("/proc/self/maps").exists():
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    wanted = [Path(p).resolve() for p in paths]
    dropped, files = 0, set()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or "w" in fields[1] or not fields[5].startswith("/"):
            continue
        path = Path(fields[5])
        if not any(path == w or w in path.parents for w in wanted):
            continue
        start, end = (int(v, 16) for v in fields[0].split("-"))
        if madvise(start, end - start, _MADV_DONTNEED) == 0:
            dropped += end - start
            files.add(path)
    for path in files:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return dropped >> 20


# glibc malloc, tuned for a process whose big buffers (activations, images) come and go:
# a fixed mmap threshold returns every buffer over 64 KiB to the system when freed
# (the default threshold climbs to 32 MiB and parks them in the heap for good), and two
# arenas stop each request thread from growing a heap of its own. Measured with
# `python -m tools bench`: RSS after 60 requests 886 → 118 MB (u2netp), 951 → 154 MB
# (isnet-general-tiny); peak 1039 → 353 MB and 1560 → 710 MB (docs/performance.md).
# Those mmap'd buffers cost a page fault per 4 KiB each time they are touched (about
# 400,000 per IS-Net run); glibc's hugetlb tunable asks for transparent huge pages
# on them (madvise), where the kernel allows it: 1.28 M → 0.32 M faults over a
# bare-run benchmark, a run 3.8 → 3.5 s, the same peak. The numpy steps around the
# run, which make many short-lived temporaries, switch to the heap for their span
# (service/memory.py, heap_buffers).
MALLOC_DEFAULTS = {
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": "65536",
    "MALLOC_TRIM_THRESHOLD_": "131072",
    "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
}


def apply_malloc_defaults() -> None:
    """Re-execute this process once with MALLOC_DEFAULTS in its environment.

    glibc reads these variables when the process starts, so setting them later
    has no effect; values already in the environment are kept.
    """
    missing = {k: v for k, v in MALLOC_DEFAULTS.items() if k not in os.environ}
    if missing:
        os.environ.update(missing)
        os.execv(sys.executable, sys.orig_argv)
