"""Background-removal appliance: one segmentation model behind a small Flask API."""
from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import threading
from dataclasses import replace
from typing import Mapping

__version__ = "0.1.0"

log = logging.getLogger(__name__)


def ensure_model(settings, build: str | None = None) -> "os.PathLike":
    """Path of catalog build ``build`` (default: the one that serves the configured model here,
    as service/engines chooses it), verified; fetched in a child process if missing.

    The fetch (and, for isnet-general-tiny, the int8 build with ``onnx``) runs
    in its own process so that none of its memory stays in the server.
    Raises RuntimeError with the fetcher's message when the model can't be had, and
    EngineUnavailable when the engine or precision asked for cannot run here.
    """
    from .catalog import CATALOG
    from .engines import settings_choice
    from .fetch import model_path, verify

    spec = CATALOG[build or settings_choice(CATALOG[settings.model], settings).build]
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
        raise RuntimeError(f"model {spec.name} is not in {settings.model_dir} and could not be fetched: set "
                           f"BG_MODEL_MIRROR to a folder that holds it, or let this machine reach its source "
                           f"(python -m service fetch {spec.name} says more)\n{result.stdout.strip()}")
    return path


def create_app(config: Mapping[str, str] | None = None):
    """Build the Flask app and load its model.

    ``config`` overrides environment variables by name (``{"BG_REMOVAL_MODEL": "u2netp"}``);
    it is how tests configure an app without touching ``os.environ``.
    Raises ConfigError for a bad setting and RuntimeError when the model can't be loaded.
    """
    from flask import Flask, Request

    from .api import bp, pages
    from .batch import bp as batch_bp
    from .jobs.api import bp as jobs_bp
    from .removebg import bp as removebg_bp
    from .config import Settings
    from .web import register_error_handlers
    from .gate import AdmissionGate
    from .keys import KeyRing
    from .metrics import Metrics
    from .requestlog import init_app as init_request_log
    from .sizing import gpu_memory_mb, plan
    from .web import rate_limit_headers

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

    engine, model_fallback = _load_engine(settings)
    sizing = plan(settings, engine.device, gpu_mb=gpu_memory_mb(engine.describe().get("gpu")))
    app.extensions["bg_settings"] = settings
    app.extensions["bg_engine"] = engine
    app.extensions["bg_model_fallback"] = model_fallback
    app.extensions["bg_plan"] = sizing
    app.extensions["bg_gate"] = AdmissionGate(settings.max_waiting, sizing.concurrency)
    app.extensions["bg_draining"] = threading.Event()  # set at SIGTERM (service/server.py)
    app.extensions["bg_metrics"] = Metrics(app.extensions["bg_gate"], engine)
    app.extensions["bg_keys"] = KeyRing(list(settings.api_keys), settings.rate_limit)

    app.register_blueprint(bp)
    app.register_blueprint(pages)
    app.register_blueprint(batch_bp)
    app.register_blueprint(jobs_bp)
    app.register_blueprint(removebg_bp)
    register_error_handlers(app, settings.max_file_size_mb)
    init_request_log(app, settings.cors_origins)
    app.extensions["bg_metrics"].init_app(app, settings.metrics_require_key)
    app.after_request(rate_limit_headers)

    if engine.device != "cpu":
        _warm_up(engine)
    about = engine.describe()
    reasons = [(kind, r) for kind, r in (("engine", about["fallback_reason"]),
                                          ("device", about.get("device_fallback_reason"))) if r]
    log.info("model %s loaded: %s, build %s, on %s (%s; %d thread%s)%s", engine.spec.name, engine.label,
             engine.build.name, engine.device, engine.runtime, settings.threads, "" if settings.threads == 1 else "s",
             "".join(f"; {kind} fallback: {r}" for kind, r in reasons))
    return app


FALLBACK_MODEL = "u2netp"


def _warm_up(engine) -> None:
    """One run on a blank input before the worker takes requests: on a GPU the first run chooses
    cuDNN's kernels (and TensorRT builds its engine), which would otherwise fall on a user's photo."""
    import time

    import numpy as np

    size = engine.spec.input_size
    started = time.perf_counter()
    engine.run(np.zeros((1, 3, size, size), np.float32))
    log.info("warmed up on %s in %.1f s", engine.device, time.perf_counter() - started)


def check_memory(name: str, build: str | None = None, engine: str | None = None) -> None:
    """Raise MemoryError when catalog model ``name``, run as catalog build ``build`` (whose row's
    figure counts where it has one; OpenVINO's own where ``engine`` is it and the row has one),
    needs more memory at work than this container's limit (its cgroup) allows: checked before its
    file is fetched."""
    from .catalog import CATALOG
    from .memory import cgroup_limit_mb

    spec, limit = CATALOG[name], cgroup_limit_mb()
    if build is not None and CATALOG[build].memory_mb:
        spec = CATALOG[build]
    need_mb = (spec.openvino_memory_mb if engine == "openvino" else None) or spec.memory_mb
    if need_mb and limit and need_mb > limit:
        need = "about" if spec.memory_measured else "at least"
        raise MemoryError(f"{name} needs {need} {need_mb} MB at work; this container's memory "
                          f"limit is {limit:.0f} MB")


def load_engine(name: str, settings, device: str | None = None):
    """The engine for catalog model ``name`` with the settings' engine, precision, threads and
    weights, on ``device`` (default the configured one); its build fetched if missing. Raises
    MemoryError when its memory at work is over the container's limit (cgroup), EngineUnavailable
    or DeviceUnavailable when what is asked for cannot run here, and whatever the fetch or the
    engine's load raises."""
    from .catalog import CATALOG
    from .engines import create_engine, settings_choice

    spec = CATALOG[name]
    choice = settings_choice(spec, settings, device)
    check_memory(name, choice.build, choice.engine)
    settings = replace(settings, model=name)
    return create_engine(spec, choice, ensure_model(settings, choice.build), settings, device)


def _load_engine(settings):
    """The engine for the configured model and device, and why the fallback model serves instead
    (None when it does not). With BG_REMOVAL_FALLBACK, a model that can't be fetched, verified or
    loaded gives way to u2netp; a missing device gives way to the CPU (service/device.py). The
    fallback model's file is fetched at start too, so that a run that fails for memory later can
    be retried on it (service/web.py) without a download."""
    from .catalog import CATALOG
    from .device import DeviceUnavailable
    from .engines import EngineUnavailable, settings_choice

    try:
        engine, reason = load_engine(settings.model, settings), None
    except (DeviceUnavailable, EngineUnavailable):
        raise  # one line; the start stops (service/server.py says it)
    except Exception as exc:  # fetch, checksum, or ONNX Runtime's load (memory among them)
        if not settings.fallback or settings.model == FALLBACK_MODEL:
            raise
        reason = f"{settings.model} could not be loaded: {str(exc).strip().splitlines()[0]}"
        log.warning("%s; serving %s instead (BG_REMOVAL_FALLBACK)", reason, FALLBACK_MODEL)
        return load_engine(FALLBACK_MODEL, settings), reason
    if settings.fallback and settings.model != FALLBACK_MODEL:
        try:
            ensure_model(settings, settings_choice(CATALOG[FALLBACK_MODEL], settings, "cpu").build)
        except Exception as exc:  # the configured model serves; only the retry is lost
            log.warning("fallback model %s is not available: %s", FALLBACK_MODEL, str(exc).strip().splitlines()[0])
    return engine, reason
