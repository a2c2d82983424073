"""Admission control: one at a time, waiting bounded by upload bytes and by the time limit."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import pytest

from service.errors import Busy, TimedOut
from service.http.gate import AdmissionGate


def hold(gate: AdmissionGate, size: int, entered: threading.Event, release: threading.Event, errors: list):
    try:
        with gate.admit(size, time.monotonic() + 5) as turn, turn():
            entered.set()
            release.wait(5)
    except Busy as exc:
        errors.append(exc)


@contextmanager
def occupied(gate: AdmissionGate, size: int = 0):
    """A thread holds the gate's running slot until the block ends; yields (release, errors)."""
    release, entered, errors = threading.Event(), threading.Event(), []
    runner = threading.Thread(target=hold, args=(gate, size, entered, release, errors))
    runner.start()
    assert entered.wait(5)
    try:
        yield release, errors
    finally:
        release.set()
        runner.join(5)


def test_waiting_uploads_are_bounded_by_their_bytes_not_their_count():
    gate = AdmissionGate(waiting_bytes=100)
    with occupied(gate, size=1000) as (release, errors):  # the running upload's bytes don't count
        waiters = []
        for size in (60, 30):
            entered = threading.Event()
            waiters.append((threading.Thread(target=hold, args=(gate, size, entered, release, errors)), entered))
            waiters[-1][0].start()
        while gate.admitted < 3:
            time.sleep(0.001)
        assert gate.waiting_bytes == 90
        with pytest.raises(Busy) as info:
            with gate.admit(20, time.monotonic() + 5):
                pass  # refused before any turn
        assert info.value.status == 503 and info.value.code == "busy" and info.value.retry_after > 0
    for waiter, entered in waiters:
        waiter.join(5)
        assert entered.is_set()
    assert errors == [] and gate.admitted == 0 and gate.waiting_bytes == 0


def test_a_turn_that_would_come_after_the_deadline_is_refused_at_once():
    gate = AdmissionGate(waiting_bytes=10**9)
    with gate.admit(10, time.monotonic() + 5) as turn, turn():
        time.sleep(0.2)
    assert 0.15 < gate.run_seconds < 1  # learnt from the run
    gate.run_seconds = 10.0
    with occupied(gate):
        started = time.monotonic()
        with pytest.raises(Busy, match="time limit") as info:
            with gate.admit(10, started + 5):
                pass
        assert time.monotonic() - started < 0.5 and info.value.retry_after >= 10
        assert gate.waiting_bytes == 0 and gate.admitted == 1


def test_waiting_past_the_deadline_is_timed_out():
    gate = AdmissionGate(waiting_bytes=10**9)
    with occupied(gate):
        started = time.monotonic()
        with pytest.raises(TimedOut, match="time limit") as info:
            with gate.admit(10, started + 0.05) as turn, turn():
                pass
        assert 0.04 < time.monotonic() - started < 1
        assert info.value.status == 503 and info.value.code == "timeout" and info.value.retry_after > 0
    assert gate.admitted == 0 and gate.waiting_bytes == 0


def test_uploads_held_for_elsewhere_count_against_the_same_byte_budget():
    gate = AdmissionGate(waiting_bytes=100)
    with gate.hold(70):
        assert gate.waiting_bytes == 70 and gate.admitted == 0
        with pytest.raises(Busy, match="fill the queue"):
            with gate.hold(40):
                pass
        with occupied(gate):
            with pytest.raises(Busy):
                with gate.admit(40, time.monotonic() + 5):
                    pass  # a request that would wait is refused: the budget is held
    assert gate.waiting_bytes == 0 and gate.refused["queue_full"] == 2
