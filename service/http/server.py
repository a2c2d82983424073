"""The production server: gunicorn, its worker processes (one on the CPU, several on a GPU:
service/model/sizing.py), a few threads each.

On the CPU one worker, because the model is the memory: a second worker would hold a second
copy. Threads let health and status answer while an image runs; the admission gate keeps the
images each worker runs at once to its concurrency. The master process never imports the app
(nor starts a GPU's driver, which its forked workers could then not use), so it stays a few tens
of MB.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import threading

from gunicorn import util
from gunicorn.arbiter import Arbiter
from gunicorn.workers.gthread import ThreadWorker

from ..model.holder import check_memory, ensure_model
from ..model.catalog import CATALOG
from ..config import ConfigError, Settings
from ..model.engines import settings_choice
from ..model.device import gpu_description
from ..memory import apply_malloc_defaults
from ..model.sizing import gpu_memory_mb, plan

log = logging.getLogger("service")


def _write_json_error(sock, status: int, reason: str, message: str) -> None:
    """gunicorn's error answer (``gunicorn.util.write_error``) in the API's JSON shape."""
    code = "_".join(reason.lower().split()) or "error"
    body = json.dumps({"error": message or reason, "code": code}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"X-Content-Type-Options: nosniff\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


class JsonErrorWorker(ThreadWorker):
    """gunicorn's gthread worker, answering what never reaches Flask in JSON too, failing to boot
    in one line, and draining on SIGTERM.

    gunicorn itself answers a request it can't parse (a bad request line, a
    header over its limits, a bad chunk) with a small HTML page; this worker
    swaps the one function that writes it. Run plain gunicorn with
    ``-k service.http.server.JsonErrorWorker`` to get the same.

    An app that can't be built (a missing device, a model that can't be loaded) ends the worker
    with gunicorn's boot-error status after one log line saying why (the traceback too at
    LOG_LEVEL=debug); the master repeats that line as its last (:func:`_repeat_start_error`).
    At SIGTERM the app's readiness turns to 503 at once (``AppState.draining``); the worker keeps
    accepting for SHUTDOWN_DELAY_S, then stops accepting and finishes what it admitted
    within gunicorn's graceful timeout.
    """

    def init_process(self):
        util.write_error = _write_json_error
        super().init_process()

    def load_wsgi(self):
        try:
            super().load_wsgi()
        except Exception as exc:
            reason = " ".join(str(exc).split()) or exc.__class__.__name__
            log.error("the server cannot start: %s", reason, exc_info=log.isEnabledFor(logging.DEBUG))
            if _start_errors:
                os.write(_start_errors[1], (reason + "\n").encode()[:4000])
            sys.exit(Arbiter.WORKER_BOOT_ERROR)  # the master halts on it

    def handle_exit(self, sig, frame):
        from .state import STATE

        state = getattr(getattr(self, "wsgi", None), "extensions", {}).get(STATE)  # none before the app is built
        if state is None or state.draining.is_set():
            return super().handle_exit(sig, frame)
        state.draining.set()
        delay = state.settings.shutdown_delay
        if not delay:
            return super().handle_exit(sig, frame)
        log.info("SIGTERM: readiness is 503; serving %.0f s more, then draining", delay)
        timer = threading.Timer(delay, super().handle_exit, (sig, frame))
        timer.daemon = True
        timer.start()


# A pipe from the worker to the master, for the one line that says why the worker could not boot.
_start_errors: tuple[int, int] | None = None


def _repeat_start_error(_arbiter) -> None:
    """gunicorn's on_exit hook: the worker's boot error as the master's last line on stderr."""
    if not _start_errors:
        return
    os.set_blocking(_start_errors[0], False)
    try:
        lines = os.read(_start_errors[0], 65536).decode(errors="replace").split("\n")
    except BlockingIOError:
        return
    reason = next((line for line in reversed(lines) if line.strip()), None)
    if reason:
        log.error("the server cannot start: %s", reason)


def _worker_exited(_arbiter, worker) -> None:
    """gunicorn's child_exit hook, with several workers: the queue's gauges stop counting a
    worker that is gone (its counters stay in the sums, as a counter's past does)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def _on_exit(arbiter) -> None:
    _repeat_start_error(arbiter)
    if _metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)


# The folder this server made for its workers' metrics (several workers), removed at exit.
_metrics_dir: str | None = None


def gunicorn_options(settings: Settings, workers: int = 1) -> dict:
    return {
        "bind": f"{settings.host}:{settings.port}",
        "workers": workers,
        "worker_class": "service.http.server.JsonErrorWorker",
        "threads": settings.web_threads,
        # A 1024² IS-Net run takes seconds on one slow core; gthread workers
        # heartbeat from their main loop, so this bounds a stuck worker, not a request.
        "timeout": 120,
        # After SIGTERM: the pause, then every admitted request may still take its whole time limit.
        "graceful_timeout": int(settings.shutdown_delay + settings.request_timeout) + 5,
        "keepalive": 5,
        "accesslog": None,  # the app writes one JSON line per request (service/http/requestlog.py)
        "errorlog": "-",
        "loglevel": settings.log_level,
        "on_exit": _on_exit,
        **({"child_exit": _worker_exited} if workers > 1 else {}),
        # gunicorn ≥ 25 opens a control socket under $HOME: not wanted in a
        # read-only container, and two servers on one machine would share it.
        "control_socket_disable": True,
    }


def _fail(exc: BaseException, debug: bool) -> None:
    """Stop a start that can't go on: details first, the one line that says why last, exit 1."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()] or [exc.__class__.__name__]
    if debug:
        log.debug("the start failed", exc_info=exc)
    for line in lines[1:]:
        log.info("  %s", line.strip())
    log.error("the server cannot start: %s", lines[0].rstrip(":"))
    sys.exit(1)


def serve(app_uri: str) -> None:
    """Fetch the model if needed, then run gunicorn on ``app_uri`` ("module:variable")."""
    global _start_errors, _metrics_dir
    apply_malloc_defaults()
    level = os.environ.get("LOG_LEVEL", "info").upper()  # checked with the other settings below
    logging.basicConfig(level=level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        _fail(exc, False)
    debug = settings.log_level == "debug"
    workers = 1
    try:
        choice = settings_choice(CATALOG[settings.model], settings)  # Engine-, DeviceUnavailable: one line
        sizing = plan(settings, choice.device,
                      gpu_mb=gpu_memory_mb(gpu_description()) if choice.device != "cpu" else None)
        workers = sizing.workers
        log.info("%d worker%s, %d image%s at once each (%s)", workers, "" if workers == 1 else "s",
                 sizing.concurrency, "" if sizing.concurrency == 1 else "s", sizing.reason)
        if settings.host in ("127.0.0.1", "localhost", "::1"):
            log.info("listening on %s:%d, this machine only: HOST=0.0.0.0 opens it to the network",
                     settings.host, settings.port)
        check_memory(settings.model, choice.build, choice.engine, workers)  # before a download it could never use
        ensure_model(settings, choice.build)
    except ConfigError as exc:
        _fail(exc, debug)
    except (MemoryError, RuntimeError) as exc:
        if not settings.fallback:
            _fail(exc, debug)
        # the worker gives way to the fallback model when it loads (service._load_engine)
        log.warning("%s", str(exc).splitlines()[0])

    from gunicorn.app.base import BaseApplication
    from gunicorn.util import import_app

    class Server(BaseApplication):
        def load_config(self):
            for key, value in gunicorn_options(settings, workers).items():
                self.cfg.set(key, value)

        def load(self):
            return import_app(app_uri)

    if workers > 1:  # one scrape sums every worker's metrics (service/http/metrics.py)
        _metrics_dir = tempfile.mkdtemp(prefix="bg-removal-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir
    _start_errors = os.pipe()
    Server().run()
