"""Admission control: one at a time, a bounded queue, Busy beyond it."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import pytest

from service.errors import Busy, TimedOut
from service.gate import AdmissionGate


def hold(gate: AdmissionGate, entered: threading.Event, release: threading.Event, errors: list):
    try:
        with gate.admit(time.monotonic() + 5):
            entered.set()
            release.wait(5)
    except Busy as exc:
        errors.append(exc)


@contextmanager
def occupied(gate: AdmissionGate):
    """A thread holds the gate's running slot until the block ends; yields (release, errors)."""
    release, entered, errors = threading.Event(), threading.Event(), []
    runner = threading.Thread(target=hold, args=(gate, entered, release, errors))
    runner.start()
    assert entered.wait(5)
    try:
        yield release, errors
    finally:
        release.set()
        runner.join(5)


def test_requests_beyond_running_and_queue_are_refused_at_once():
    gate = AdmissionGate(concurrency=1, max_queue=1)
    with occupied(gate) as (release, errors):
        waiter_entered = threading.Event()
        waiter = threading.Thread(target=hold, args=(gate, waiter_entered, release, errors))
        waiter.start()
        while gate.admitted < 2:
            pass
        with pytest.raises(Busy) as info:
            with gate.admit(time.monotonic() + 5):
                pass
        assert info.value.status == 503 and info.value.code == "busy" and info.value.retry_after > 0
    waiter.join(5)
    assert waiter_entered.is_set() and errors == [] and gate.admitted == 0


def test_waiting_past_the_deadline_is_timed_out():
    gate = AdmissionGate(concurrency=1, max_queue=5)
    with occupied(gate):
        started = time.monotonic()
        with pytest.raises(TimedOut, match="time limit") as info:
            with gate.admit(started + 0.05):
                pass
        assert 0.04 < time.monotonic() - started < 1
        assert info.value.status == 503 and info.value.code == "timeout" and info.value.retry_after > 0
    assert gate.admitted == 0
