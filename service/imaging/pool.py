"""A few threads for the CPU-side steps of one photo: the foreground estimate's boxes run side by
side on the cores a request would otherwise leave idle (a GPU host's worker runs one photo at a
time on one thread; docs/scaling.md).

The boxes spend most of their time in numpy and Pillow, which let go of Python's lock while they
work. Where every core is busy (one worker per core under full load) the threads only take
turns: the same work, a little more switching. Each process makes its own pool at first use, so
a pool never crosses a fork (gunicorn's workers each get theirs).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

from ..model.cpu import usable_cores

T = TypeVar("T")
R = TypeVar("R")

# Boxes are a few ms each: beyond four threads the handing out would cost what they save.
MAX_THREADS = 4

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_for: tuple[int, int] = (0, 0)  # (process id, threads) it was made for


def threads() -> int:
    """How many threads a step spreads over: the usable cores (affinity, cgroup quota), at most
    MAX_THREADS."""
    return max(1, min(MAX_THREADS, usable_cores()))


def _executor(size: int) -> ThreadPoolExecutor:
    global _pool, _pool_for
    with _lock:
        if _pool is None or _pool_for != (os.getpid(), size):
            _pool = ThreadPoolExecutor(size, thread_name_prefix="bg-steps")  # the old one's threads end idle
            _pool_for = (os.getpid(), size)
        return _pool


def spread(work: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[work(item) for item in items]``, the items run on up to :func:`threads` threads, the
    answers in the items' order. ``work`` must not share writable state between items other than
    disjoint parts of one array."""
    items = list(items)
    size = threads()
    if size < 2 or len(items) < 2:
        return [work(item) for item in items]
    return list(_executor(size).map(work, items))
