"""The app's state (:class:`AppState`, one typed object in ``app.extensions``) and what a request
reads of it: the settings, the model, the admission gate, the API keys and their rate limits."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from flask import Flask, Response, current_app, g, request

from ..config import Settings
from ..model.engines import Engine
from ..errors import Unauthorized
from .gate import AdmissionGate
from .keys import KeyRing
from .metrics import Metrics
from ..model.holder import ModelHolder
from ..model.sizing import Plan


STATE = "bg_removal"  # where create_app keeps the AppState in app.extensions


@dataclass
class AppState:
    """What a running app holds, as one typed object (``app.extensions[STATE]``), made by
    :func:`service.create_app`: the settings, the model, the worker's plan, the admission gate,
    the metrics, the API keys, whether SIGTERM has come, and the job system once a job route
    has connected it."""
    settings: Settings
    model: ModelHolder
    plan: Plan
    gate: AdmissionGate
    metrics: Metrics
    keys: KeyRing
    draining: threading.Event = field(default_factory=threading.Event)  # set at SIGTERM (service/http/server.py)
    jobs: object | None = None  # service.jobs.Jobs, connected at the first job request (jobs/api.py)


def app_state(app: Flask | None = None) -> AppState:
    """The AppState of ``app`` (default: the app of the request being served)."""
    return (app or current_app).extensions[STATE]


def current_settings() -> Settings:
    return app_state().settings


def current_model() -> ModelHolder:
    return app_state().model


def current_engine() -> Engine:
    return current_model().engine


def admission_gate() -> AdmissionGate:
    return app_state().gate


def key_ring() -> KeyRing:
    return app_state().keys


def key_accepted() -> bool:
    """True when the server has no API keys, or the request's X-API-Key header (any case:
    remove.bg clients write X-Api-Key) carries one of them (service/http/keys.py); the key's index is
    kept for the request (``g.bg_key``)."""
    ring = key_ring()
    if not ring.required:
        return True
    g.bg_key = ring.match(request.headers.get("X-API-Key"))
    return g.bg_key is not None


def count_request() -> None:
    """Count this request against its key's limit: RateLimited (429) past it. The key's window
    goes on the answer as X-RateLimit-* headers (:func:`rate_limit_headers`)."""
    if g.get("bg_key") is not None:
        g.bg_window = key_ring().take(g.bg_key)


def rate_limit_headers(response: Response) -> Response:
    """After every request: the X-RateLimit-* headers of the key it counted against, if limited."""
    window = g.get("bg_window")
    if window is not None:
        response.headers.update(window.headers())
    return response


def require_api_key():
    """With API keys set, every POST under /api/bg needs one in X-API-Key, and counts against
    its limit."""
    if request.method == "POST":
        if not key_accepted():
            raise Unauthorized("missing or wrong X-API-Key header")
        count_request()
