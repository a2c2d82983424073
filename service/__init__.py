"""Background-removal appliance: one segmentation model behind a small Flask API."""
from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from typing import Mapping

__version__ = "0.1.0"

log = logging.getLogger(__name__)


def ensure_model(settings) -> "os.PathLike":
    """Path of the configured model, verified; fetched in a child process if missing.

    The fetch (and, for isnet-general-tiny, the int8 build with ``onnx``) runs
    in its own process so that none of its memory stays in the server.
    Raises RuntimeError with the fetcher's message when the model can't be had.
    """
    from .catalog import CATALOG
    from .fetch import model_path, verify

    spec = CATALOG[settings.model]
    path = model_path(spec, settings.model_dir)
    if verify(path, spec.checksum):
        return path
    log.info("model %s not ready in %s; fetching", spec.name, settings.model_dir)
    env = dict(os.environ, MODEL_DIR=str(settings.model_dir))
    if settings.mirror:
        env["BG_MODEL_MIRROR"] = str(settings.mirror)
    result = subprocess.run([sys.executable, "-m", "service", "fetch", spec.name], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0 or not verify(path, spec.checksum):
        raise RuntimeError(f"model {spec.name} is not available:\n{result.stdout.strip()}")
    return path


def create_app(config: Mapping[str, str] | None = None):
    """Build the Flask app and load its model.

    ``config`` overrides environment variables by name (``{"BG_REMOVAL_MODEL": "u2netp"}``);
    it is how tests configure an app without touching ``os.environ``.
    Raises ConfigError for a bad setting and RuntimeError when the model can't be loaded.
    """
    from flask import Flask, Request

    from .api import bp, pages
    from .removebg import bp as removebg_bp
    from .catalog import CATALOG
    from .config import Settings
    from .engine import Engine
    from .errors import register_error_handlers
    from .gate import AdmissionGate
    from .requestlog import init_app as init_request_log

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

    engine = Engine(CATALOG[settings.model], ensure_model(settings), settings.threads,
                    float_weights=settings.float_weights)
    app.extensions["bg_settings"] = settings
    app.extensions["bg_engine"] = engine
    app.extensions["bg_gate"] = AdmissionGate(settings.max_waiting)

    app.register_blueprint(bp)
    app.register_blueprint(pages)
    app.register_blueprint(removebg_bp)
    register_error_handlers(app, settings.max_file_size_mb)
    init_request_log(app, settings.cors_origins)

    log.info("model %s loaded (%d thread%s)", engine.spec.name, settings.threads,
             "" if settings.threads == 1 else "s")
    return app
