"""Background-removal appliance: one segmentation model behind a small Flask API."""
from __future__ import annotations

import io
import logging
import os
from typing import Mapping

from .model.holder import FALLBACK_MODEL, check_memory, ensure_model, load_engine
from .version import __version__

__all__ = ["create_app", "remove", "new_session", "FALLBACK_MODEL", "check_memory", "ensure_model", "load_engine",
           "__version__"]


def __getattr__(name: str):
    """rembg's library call (``from service import remove, new_session``: service/library.py),
    imported when first asked for."""
    if name in ("remove", "new_session", "Session"):
        from . import library

        return getattr(library, name)
    raise AttributeError(f"module 'service' has no attribute {name!r}")

log = logging.getLogger(__name__)


def create_app(config: Mapping[str, str] | None = None, engine=None):
    """Build the Flask app and load its model.

    ``config`` overrides environment variables by name (``{"BG_REMOVAL_MODEL": "u2netp"}``);
    it is how tests configure an app without touching ``os.environ``. ``engine`` (an
    :class:`service.model.engines.Engine` already loaded) serves instead of loading one, so that tests
    can share a real one between apps.
    Raises ConfigError for a bad setting and RuntimeError when the model can't be loaded.
    """
    from flask import Flask, Request

    from .http.api import bp, pages
    from .http.batch import bp as batch_bp
    from .jobs.api import bp as jobs_bp
    from .http.removebg import bp as removebg_bp
    from .http.rembg_api import bp as rembg_bp
    from .config import Settings
    from .model.holder import ModelHolder
    from .http.gate import AdmissionGate
    from .http.keys import KeyRing
    from .http.metrics import Metrics
    from .http.requestlog import init_app as init_request_log
    from .model.sizing import gpu_memory_mb, plan
    from .http.state import AppState, rate_limit_headers, STATE
    from .http.answers import register_error_handlers

    settings = Settings.from_env({**os.environ, **(config or {})})

    class InMemoryRequest(Request):
        """Uploads stay in memory: nothing from a request is written to disk."""

        def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
            return io.BytesIO()

    app = Flask(__name__)
    app.request_class = InMemoryRequest
    # The file limit is checked on the file itself; the body may carry a little more
    # (multipart headers, the colour field) before Werkzeug refuses to read on.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_file_size + 64 * 1024
    app.json.sort_keys = False

    holder = ModelHolder(settings, engine) if engine is not None else ModelHolder.load(settings)
    engine = holder.engine
    sizing = plan(settings, engine.device, gpu_mb=gpu_memory_mb(engine.describe().get("gpu")))
    gate = AdmissionGate(settings.max_waiting, sizing.concurrency)
    state = app.extensions[STATE] = AppState(settings, holder, sizing, gate, Metrics(gate, engine),
                                             KeyRing(list(settings.api_keys), settings.rate_limit))

    app.register_blueprint(bp)
    app.register_blueprint(pages)
    app.register_blueprint(batch_bp)
    app.register_blueprint(jobs_bp)
    app.register_blueprint(removebg_bp)
    app.register_blueprint(rembg_bp)
    register_error_handlers(app)
    init_request_log(app, settings.cors_origins)
    state.metrics.init_app(app, state.keys, settings.metrics_require_key)
    app.after_request(rate_limit_headers)

    about = engine.describe()
    reasons = [(kind, r) for kind, r in (("engine", about["fallback_reason"]),
                                          ("device", about.get("device_fallback_reason"))) if r]
    log.info("model %s loaded: %s, build %s, on %s (%s; %d thread%s)%s", engine.spec.name, engine.label,
             engine.build.name, engine.device, engine.runtime, engine.threads, "" if engine.threads == 1 else "s",
             "".join(f"; {kind} fallback: {r}" for kind, r in reasons))
    return app


