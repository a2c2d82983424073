"""``/metrics``: the server's figures in Prometheus' text format, for a scraper and an autoscaler.

Named by Prometheus' conventions (base units, ``_total`` counters, ``_seconds`` histograms),
each app with a registry of its own. Counted as they happen: requests by route, method and
status, their duration, the model's run time and the wait for a turn. Read at each scrape: the
admission gate (requests admitted and waiting, waiting bytes, expected wait, refusals by
reason), the process's memory and its peak, and one info metric naming model, engine,
precision and device. ``bg_queue_requests`` (running + waiting) is the backlog that
deploy/kubernetes scales on.
"""
from __future__ import annotations

import time

from flask import Flask, Response, g, request
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, Info, ProcessCollector,
                               disable_created_metrics, generate_latest)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .engines import Engine
from .errors import Unauthorized
from .gate import AdmissionGate
from .memory import peak_rss_mb

# No ``_created`` series beside each counter and histogram: they double the lines and no
# dashboard or rule here reads them (a process-wide switch of prometheus_client).
disable_created_metrics()

# Seconds: a u2netp run takes a tenth, IS-Net's one to a few, a queue may wait up to the time limit.
_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0)


class _GateCollector:
    """The admission gate's state, read at scrape time."""

    def __init__(self, gate: AdmissionGate):
        self._gate = gate

    def collect(self):
        gate = self._gate
        yield GaugeMetricFamily("bg_queue_requests", "Requests admitted: the one running and those waiting for a turn",
                                value=gate.admitted)
        yield GaugeMetricFamily("bg_queue_waiting_bytes", "Upload bytes of the requests waiting for a turn",
                                value=gate.waiting_bytes)
        yield GaugeMetricFamily("bg_queue_expected_wait_seconds", "Expected wait for a turn of a request arriving now",
                                value=gate.expected_wait())
        yield CounterMetricFamily("bg_admitted_requests", "Requests admitted to the queue", value=gate.admitted_total)
        rejected = CounterMetricFamily("bg_rejected_requests", "Requests refused with 503 by the admission gate",
                                       labels=["reason"])
        for reason in ("queue_full", "wait_too_long", "timed_out"):
            rejected.add_metric([reason], gate.refused[reason])
        yield rejected


class _MemoryCollector:
    def collect(self):
        yield GaugeMetricFamily("bg_process_peak_resident_memory_bytes",
                                "Highest resident memory of the worker process since it started",
                                value=peak_rss_mb() * 2**20)


class Metrics:
    """One app's metrics; :meth:`init_app` counts its requests and serves ``/metrics``."""

    def __init__(self, gate: AdmissionGate, engine: Engine):
        self.registry = CollectorRegistry()
        self.requests = Counter("bg_http_requests", "HTTP requests answered, by route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.duration = Histogram("bg_http_request_duration_seconds", "Time from a request's arrival to its answer",
                                  ["route"], buckets=_BUCKETS, registry=self.registry)
        self.model_run = Histogram("bg_model_run_seconds", "Time of one model run (a mask predicted)",
                                   buckets=_BUCKETS, registry=self.registry)
        self.queue_wait = Histogram("bg_queue_wait_seconds", "Time from admission to a request's turn",
                                    buckets=_BUCKETS, registry=self.registry)
        info = Info("bg_model", "The model that serves and how it runs", registry=self.registry)
        info.info({"model": engine.spec.name, "build": engine.build.name, "engine": engine.name,
                   "precision": engine.precision, "device": engine.device})
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, CPU seconds, open fds
        self.registry.register(_GateCollector(gate))
        self.registry.register(_MemoryCollector())
        gate.observer = lambda waited, _ran: self.queue_wait.observe(waited)

    def init_app(self, app: Flask, require_key: bool) -> None:
        """Count every answer, and serve ``GET /metrics`` (behind the API keys with
        ``require_key``: ``X-API-Key`` or ``Authorization: Bearer``, as Prometheus' scrape config
        sends it; a scrape never counts against a key's rate limit)."""

        @app.after_request
        def _count(response):
            route = request.url_rule.rule if request.url_rule else "unmatched"  # bounded label values
            self.requests.labels(route, request.method, str(response.status_code)).inc()
            self.duration.labels(route).observe(time.perf_counter() - g.get("started", time.perf_counter()))
            return response

        @app.get("/metrics")
        def metrics():
            keys = app.extensions["bg_keys"]
            if require_key and keys.required:
                bearer = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
                if keys.match(request.headers.get("X-API-Key") or bearer) is None:
                    raise Unauthorized("/metrics needs the API key: X-API-Key or Authorization: Bearer")
            return Response(generate_latest(self.registry), content_type=CONTENT_TYPE_LATEST)
