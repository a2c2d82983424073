"""Admission control: one inference at a time; the others wait while their uploads fit a byte
budget and their turn can come within the time limit; 503 beyond that.

Running images one at a time keeps the peak memory that of a single inference. A waiting
request costs only its upload's bytes, so the budget for waiting is counted in bytes
(MAX_WAITING_MB), not in requests: a burst of a user's batch script is served, not turned away.
"""
from __future__ import annotations

import math
import threading
import time
from collections import Counter
from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator

from ..errors import Busy, TimedOut

# Weight of the newest run in the moving average of run times.
_SMOOTHING = 0.3


class AdmissionGate:
    """At most ``concurrency`` requests run; others wait while the bytes of the waiting
    uploads stay within ``waiting_bytes`` and the expected wait lets them finish before their
    deadline (a ``time.monotonic()`` value). The rest get Busy at once, with a Retry-After of
    the expected wait. A waiting request still not started at its deadline gets TimedOut.
    """

    def __init__(self, waiting_bytes: int, concurrency: int = 1):
        self._slots = threading.Semaphore(concurrency)
        self._lock = threading.Lock()
        self._budget = waiting_bytes
        self._concurrency = concurrency
        self.admitted = 0        # running + waiting, for status reports
        self.admitted_total = 0  # every request ever admitted, for metrics
        self.waiting_bytes = 0   # upload bytes of the requests not yet running
        self.run_seconds: float | None = None  # moving average of a turn's duration
        self.refused: Counter[str] = Counter()  # refusals by reason: queue_full, wait_too_long, timed_out
        # Called after each turn with (seconds waited for it, seconds it ran): the metrics' hook.
        self.observer: Callable[[float, float], None] | None = None
        # Called with the lock held after each change, with "admitted", "refused" (and the reason)
        # or "changed": the metrics keep their gauges and counters from it (service/http/metrics.py).
        self.listener: Callable[[str, str | None], None] | None = None

    def _notify(self, event: str, reason: str | None = None) -> None:
        if self.listener:
            self.listener(event, reason)

    def expected_wait(self) -> float:
        """Seconds a request arriving now waits for its turn, from the moving average."""
        ahead = max(0, self.admitted - self._concurrency + 1)
        return ahead * (self.run_seconds or 0.0) / self._concurrency

    def refusal(self, size: int, deadline: float) -> str | None:
        """Why a request of ``size`` upload bytes, due by ``deadline``, would be refused now
        (a reason of :attr:`refused`), or None when it would be admitted. Call with the lock held
        or accept a moment's staleness (readiness does)."""
        if self.admitted < self._concurrency:  # it would run at once
            return None
        if self.waiting_bytes + size > self._budget:
            return "queue_full"
        if time.monotonic() + self.expected_wait() + (self.run_seconds or 0.0) > deadline:
            return "wait_too_long"
        return None

    def full(self, timeout: float) -> str | None:
        """Why the gate turns new work away now (readiness): the waiting uploads fill the byte
        budget, or a request arriving now would not get its turn within ``timeout`` seconds."""
        if self.admitted >= self._concurrency and self.waiting_bytes >= self._budget:
            return "queue_full"
        return self.refusal(0, time.monotonic() + timeout)

    REASONS = {"queue_full": "the waiting uploads fill the queue",
                "wait_too_long": "its turn would come after the time limit"}

    def _refuse(self, reason: str) -> Busy:
        self.refused[reason] += 1
        self._notify("refused", reason)
        return Busy(f"the server is busy with other images ({self.REASONS[reason]}); retry shortly",
                    retry_after=max(1, math.ceil(self.expected_wait())))

    def refuse(self, reason: str) -> Busy:
        """The Busy answer for ``reason`` (of :meth:`refusal`), counted among the refusals."""
        with self._lock:
            return self._refuse(reason)

    @contextmanager
    def hold(self, size: int) -> Iterator[None]:
        """Count ``size`` bytes of an upload held in memory that will not run here (a job's, on
        its way to Redis) as waiting, or raise Busy at once when they would overfill the budget."""
        with self._lock:
            if self.waiting_bytes + size > self._budget:
                raise self._refuse("queue_full")
            self.waiting_bytes += size
            self._notify("changed")
        try:
            yield
        finally:
            with self._lock:
                self.waiting_bytes -= size
                self._notify("changed")

    @contextmanager
    def admit(self, size: int, deadline: float) -> Iterator[Callable[..., ContextManager[None]]]:
        """Count a request whose upload is ``size`` bytes as waiting, or raise Busy at once.

        Yields ``turn``: ``with turn():`` waits for the running slot (TimedOut at ``deadline``)
        and holds it. The upload is read and checked between the two, while its bytes count.
        A batch takes one turn per image: ``turn(done=n, until=d)`` stops counting ``n`` of
        its bytes as waiting when the turn comes (default: all that are left) and waits until
        ``d`` (default: the admission's deadline).
        """
        with self._lock:
            reason = self.refusal(size, deadline)
            if reason:
                raise self._refuse(reason)
            self.admitted += 1
            self.admitted_total += 1
            self.waiting_bytes += size
            self._notify("admitted")
        left = [size]  # of this request's bytes, those still counted as waiting
        queued = [time.monotonic()]  # since when it waits for its next turn

        @contextmanager
        def turn(done: int | None = None, until: float | None = None) -> Iterator[None]:
            if not self._slots.acquire(timeout=max(0.0, (until or deadline) - time.monotonic())):
                with self._lock:
                    self.refused["timed_out"] += 1
                    self._notify("refused", "timed_out")
                raise TimedOut("the time limit passed while waiting for a turn; retry shortly",
                               retry_after=max(1, math.ceil(self.expected_wait())))
            released = left[0] if done is None else min(done, left[0])
            with self._lock:
                self.waiting_bytes -= released
                left[0] -= released
                self._notify("changed")
            started = time.monotonic()
            try:
                yield
            finally:
                self._slots.release()
                took = time.monotonic() - started
                with self._lock:
                    self.run_seconds = took if self.run_seconds is None else (
                        _SMOOTHING * took + (1 - _SMOOTHING) * self.run_seconds)
                    self._notify("changed")
                if self.observer:
                    self.observer(started - queued[0], took)
                queued[0] = time.monotonic()

        try:
            yield turn
        finally:
            with self._lock:
                self.admitted -= 1
                self.waiting_bytes -= left[0]
                self._notify("changed")
