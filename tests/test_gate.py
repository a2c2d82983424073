"""Admission control: one at a time, a bounded queue, Busy beyond it."""
from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest

from service.errors import Busy
from service.gate import AdmissionGate


def hold(gate: AdmissionGate, entered: threading.Event, release: threading.Event, errors: list):
    try:
        with gate.admit():
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
    gate = AdmissionGate(concurrency=1, max_queue=1, wait_timeout=5)
    with occupied(gate) as (release, errors):
        waiter_entered = threading.Event()
        waiter = threading.Thread(target=hold, args=(gate, waiter_entered, release, errors))
        waiter.start()
        while gate.admitted < 2:
            pass
        with pytest.raises(Busy) as info:
            with gate.admit():
                pass
        assert info.value.status == 503 and info.value.retry_after > 0
    waiter.join(5)
    assert waiter_entered.is_set() and errors == [] and gate.admitted == 0


def test_waiting_too_long_is_busy():
    gate = AdmissionGate(concurrency=1, max_queue=5, wait_timeout=0.05)
    with occupied(gate):
        with pytest.raises(Busy, match="timed out"):
            with gate.admit():
                pass
    assert gate.admitted == 0
