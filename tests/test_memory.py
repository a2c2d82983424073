"""heap_buffers() switches glibc's mmap threshold and back; checked through glibc's own counters."""
import os
import subprocess
import sys
import textwrap

import pytest

from service import memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")

# Allocates a 1 MiB numpy buffer outside, inside and again outside heap_buffers(), then an
# 8 MiB one, and prints how many bytes glibc handed out as mappings of their own (mallinfo2's
# hblkhd) for each.
PROBE = textwrap.dedent("""
    import ctypes
    import numpy as np
    from service.memory import heap_buffers

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2

    def mapped_growth(size=1 << 20):
        before = libc.mallinfo2().hblkhd
        buffer = np.ones(size, np.uint8)
        return libc.mallinfo2().hblkhd - before

    outside = mapped_growth()
    with heap_buffers():
        inside = mapped_growth()
    print(outside, inside, mapped_growth(), mapped_growth(8 << 20))
""")


def probe(env: dict) -> list[int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, check=True,
                         capture_output=True, text=True).stdout
    return [int(n) for n in out.split()]


def test_heap_buffers_serve_from_the_heap_only_within():
    outside, inside, after, after_big = probe({"MALLOC_MMAP_THRESHOLD_": "65536"})
    assert outside >= 1 << 20
    assert inside == 0
    assert after >= 1 << 20 and after_big >= 8 << 20


def test_heap_buffers_leave_glibcs_sliding_threshold_alone():
    # No fixed threshold: the first 1 MiB buffer is over glibc's starting 128 KiB, so it is
    # mapped, and freeing it raises the threshold to its size. Still sliding afterwards: the next
    # 1 MiB comes from the heap (not a fixed 64 KiB put back), 8 MiB is mapped (not a fixed 32 MiB).
    outside, inside, after, after_big = probe({})
    assert outside >= 1 << 20
    assert inside == 0 and after == 0
    assert after_big >= 8 << 20


def test_trim_heap_runs_on_glibc():
    assert memory.trim_heap() is True
    assert memory.release_memory() is True
