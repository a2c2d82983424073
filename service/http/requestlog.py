"""Request ids, one JSON log line per request, and the headers every answer carries.

Each request gets an id (the client's ``X-Request-Id`` when it is a sane
token, else a new one), echoed in the answer's ``X-Request-Id``. When the
answer is sent, one JSON line goes to the ``service.access`` logger:
request id, method, route, status, bytes in and out, pixels processed,
model time, total time and the process RSS afterwards. Nothing secret
(API key, file names, image data) is logged.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from typing import Iterable, Iterator

from flask import Flask, g, request

from ..memory import rss_mb

log = logging.getLogger("service.access")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _ensure_handler() -> None:
    """Log to stdout, one bare JSON object a line, unless the host configured the logger."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def note(**fields) -> None:
    """Add fields (``pixels``, ``model_ms``) to this request's log line."""
    g.log_fields.update(fields)


def init_app(app: Flask, cors_origins: tuple[str, ...]) -> None:
    _ensure_handler()

    @app.before_request
    def _start():
        g.started = time.perf_counter()
        incoming = request.headers.get("X-Request-Id", "")
        g.request_id = incoming if _CLIENT_ID.match(incoming) else uuid.uuid4().hex
        g.log_fields = {}

    @app.after_request
    def _finish(response):
        response.headers["X-Request-Id"] = g.get("request_id", "")
        response.headers["X-Content-Type-Options"] = "nosniff"
        _cors(response, cors_origins)
        entry = {
            "request_id": g.get("request_id"),
            "method": request.method,
            "route": request.url_rule.rule if request.url_rule else request.path,
            "status": response.status_code,
            "bytes_in": request.content_length or 0,
            "bytes_out": 0 if response.is_streamed else response.calculate_content_length() or 0,
            **g.get("log_fields", {}),
        }
        started = g.get("started", time.perf_counter())

        def write() -> None:
            entry.update(total_ms=round((time.perf_counter() - started) * 1000, 1), rss_mb=round(rss_mb(), 1))
            log.info(json.dumps(entry))

        if response.is_streamed:  # a batch's zip: its line is written when its last byte has gone
            response.response = _counted(response.response, entry)
            response.call_on_close(write)
        else:
            write()
        return response


def _counted(chunks: Iterable[bytes], entry: dict) -> Iterator[bytes]:
    """A streamed body's chunks as they go, their bytes added to ``entry["bytes_out"]``; closing
    it closes ``chunks`` at once (a batch's generator gives its admission back when closed)."""
    try:
        for chunk in chunks:
            entry["bytes_out"] += len(chunk)
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def _cors(response, origins: tuple[str, ...]) -> None:
    """Allow the configured origins (none by default) to call the API from a browser."""
    origin = request.headers.get("Origin")
    if not origins or not origin:
        return
    if "*" in origins:
        response.headers["Access-Control-Allow-Origin"] = "*"
    elif origin.rstrip("/") in origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.add("Vary", "Origin")
    else:
        return
    response.headers["Access-Control-Expose-Headers"] = \
        "X-Model-Used, X-Processing-Time-Ms, X-Request-Id, Content-Disposition, Retry-After"
    if request.method == "OPTIONS":
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type, X-API-Key, X-Request-Id"
        response.headers["Access-Control-Max-Age"] = "600"
