"""Admission control: one inference at a time, a short queue, 503 beyond it.

Running images one at a time keeps the peak memory that of a single
inference; concurrent requests wait their turn instead of multiplying it.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

from .errors import Busy, TimedOut


class AdmissionGate:
    """At most ``concurrency`` requests run and ``max_queue`` wait; the rest get Busy at once.

    A waiting request still not started at its deadline (a ``time.monotonic()``
    value) gets TimedOut.
    """

    def __init__(self, concurrency: int = 1, max_queue: int = 2):
        self._slots = threading.Semaphore(concurrency)
        self._lock = threading.Lock()
        self._limit = concurrency + max_queue
        self.admitted = 0  # running + waiting, for status reports

    @contextmanager
    def admit(self, deadline: float) -> Iterator[None]:
        with self._lock:
            if self.admitted >= self._limit:
                raise Busy("the server is busy with other images; retry shortly", retry_after=2)
            self.admitted += 1
        try:
            if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise TimedOut("the time limit passed while waiting for a turn; retry shortly",
                               retry_after=5)
            try:
                yield
            finally:
                self._slots.release()
        finally:
            with self._lock:
                self.admitted -= 1
