"""heap_buffers() switches glibc's mmap threshold and back, checked through glibc's own counters;
drop_mapped_pages() releases a mapped file's pages, checked in /proc/self/smaps."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
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


def test_mapped_pages_of_a_file_are_dropped_and_read_back_the_same(tmp_path):
    import mmap

    data = np.random.default_rng(0).integers(0, 256, 32 * 2**20, dtype=np.uint8).tobytes()
    weights = tmp_path / "weights.bin"
    weights.write_bytes(data)

    def resident_kb() -> int:  # this file's resident pages in this process
        text = Path("/proc/self/smaps").read_text()
        blocks = text.split(str(weights) + "\n")[1:]
        return sum(int(b.split("Rss:")[1].split()[0]) for b in blocks)

    with open(weights, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mapped:
        assert mapped[:] == data  # every page read, so resident
        assert resident_kb() > 30 * 1024
        assert memory.drop_mapped_pages([tmp_path]) == 32
        assert resident_kb() < 1024
        assert mapped[:] == data  # read back from the file, unchanged
