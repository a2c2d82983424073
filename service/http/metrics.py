"""``/metrics``: the server's figures in Prometheus' text format, for a scraper and an autoscaler.

Named by Prometheus' conventions (base units, ``_total`` counters, ``_seconds`` histograms),
each app with a registry of its own. Counted as they happen: requests by route, method and
status, their duration, the model's run time, the wait for a turn, and the admission gate's
state as it changes (requests admitted and waiting, waiting bytes, expected wait, refusals by
reason). Read at each scrape: the process's memory and its peak. One info metric names model,
engine, precision and device. ``bg_queue_requests`` (running + waiting) is the backlog that
deploy/kubernetes scales on. With several worker processes a scrape sums them all (:class:`Metrics`).
"""
from __future__ import annotations

import os
import time

from flask import Flask, Response, g, request
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector,
                               disable_created_metrics, generate_latest)
from prometheus_client.multiprocess import MultiProcessCollector

from ..model.engines import Engine
from ..errors import Unauthorized
from .gate import AdmissionGate
from .keys import KeyRing
from ..memory import peak_rss_mb

# No ``_created`` series beside each counter and histogram: they double the lines and no
# dashboard or rule here reads them (a process-wide switch of prometheus_client).
disable_created_metrics()

# Seconds: a u2netp run takes a tenth, IS-Net's one to a few, a queue may wait up to the time limit.
_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0)


# Where several worker processes keep their figures for one scrape to sum (prometheus_client's
# multiprocess mode): service/http/server.py sets it, for gunicorn's workers, when it starts more than one.
SHARED_DIR = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    """One app's metrics; :meth:`init_app` counts its requests and serves ``/metrics``.

    With several worker processes (``PROMETHEUS_MULTIPROC_DIR`` set), each keeps its counters,
    histograms and gauges in files there and a scrape, whichever worker answers it, reads them
    all: counts and histograms summed over every worker that ever ran, the queue's gauges over
    the live ones (its expected wait and the peak memory: their highest). The process's own
    figures (``process_*``) are then left out: they would be the answering worker's alone.
    """

    def __init__(self, gate: AdmissionGate, engine: Engine):
        self.shared = bool(os.environ.get(SHARED_DIR))
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("bg_http_requests", "HTTP requests answered, by route, method and status",
                                ["route", "method", "status"], registry=registry)
        self.duration = Histogram("bg_http_request_duration_seconds", "Time from a request's arrival to its answer",
                                  ["route"], buckets=_BUCKETS, registry=registry)
        self.model_run = Histogram("bg_model_run_seconds", "Time of one model run (a mask predicted)",
                                   buckets=_BUCKETS, registry=registry)
        self.queue_wait = Histogram("bg_queue_wait_seconds", "Time from admission to a request's turn",
                                    buckets=_BUCKETS, registry=registry)
        info = Gauge("bg_model_info", "The model that serves and how it runs",
                     ["model", "build", "engine", "precision", "device"], multiprocess_mode="max", registry=registry)
        info.labels(engine.spec.name, engine.build.name, engine.name, engine.precision, engine.device).set(1)
        self.queued = Gauge("bg_queue_requests", "Requests admitted: those running and those waiting for a turn",
                            multiprocess_mode="livesum", registry=registry)
        self.waiting = Gauge("bg_queue_waiting_bytes", "Upload bytes of the requests waiting for a turn",
                             multiprocess_mode="livesum", registry=registry)
        self.expected_wait = Gauge("bg_queue_expected_wait_seconds",
                                   "Expected wait for a turn of a request arriving now", multiprocess_mode="livemax",
                                   registry=registry)
        self.admitted = Counter("bg_admitted_requests", "Requests admitted to the queue", registry=registry)
        self.rejected = Counter("bg_rejected_requests", "Requests refused with 503 by the admission gate",
                                ["reason"], registry=registry)
        for reason in ("queue_full", "wait_too_long", "timed_out"):
            self.rejected.labels(reason)
        self.peak = Gauge("bg_process_peak_resident_memory_bytes",
                          "Highest resident memory of a worker process since it started", multiprocess_mode="max",
                          registry=registry)
        if not self.shared:
            ProcessCollector(registry=registry)  # process_resident_memory_bytes, CPU seconds, open fds
        self._gate = gate
        gate.observer = lambda waited, _ran: self.queue_wait.observe(waited)
        gate.listener = self._gate_changed
        self._gate_changed("changed", None)

    def _gate_changed(self, event: str, reason: str | None) -> None:
        """The gate's hook (called with its lock held): its state into the gauges, its events
        into the counters."""
        gate = self._gate
        if event == "admitted":
            self.admitted.inc()
        elif event == "refused":
            self.rejected.labels(reason).inc()
        self.queued.set(gate.admitted)
        self.waiting.set(gate.waiting_bytes)
        self.expected_wait.set(gate.expected_wait())

    def exposition(self) -> bytes:
        """The text a scrape gets: this worker's registry, or with several workers every worker's files."""
        self.peak.set(peak_rss_mb() * 2**20)
        if not self.shared:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)

    def init_app(self, app: Flask, keys: KeyRing, require_key: bool) -> None:
        """Count every answer, and serve ``GET /metrics`` (behind ``keys`` with
        ``require_key``: ``X-API-Key`` or ``Authorization: Bearer``, as Prometheus' scrape config
        sends it; a scrape never counts against a key's rate limit)."""

        @app.after_request
        def _count(response):
            route = request.url_rule.rule if request.url_rule else "unmatched"  # bounded label values
            self.requests.labels(route, request.method, str(response.status_code)).inc()
            started = g.get("started", time.perf_counter())
            if response.is_streamed:  # a batch's zip: its time ends when its last byte has gone
                response.call_on_close(lambda: self.duration.labels(route).observe(time.perf_counter() - started))
            else:
                self.duration.labels(route).observe(time.perf_counter() - started)
            if self.shared:  # each worker's peak is in the files when another one answers a scrape
                self.peak.set(peak_rss_mb() * 2**20)
            return response

        @app.get("/metrics")
        def metrics():
            if require_key and keys.required:
                bearer = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
                if keys.match(request.headers.get("X-API-Key") or bearer) is None:
                    raise Unauthorized("/metrics needs the API key: X-API-Key or Authorization: Bearer")
            return Response(self.exposition(), content_type=CONTENT_TYPE_LATEST)
