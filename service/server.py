"""The production server: gunicorn, one worker process, a few threads.

One worker because the model is the memory: a second worker would hold a
second copy. Threads let health and status answer while an image runs; the
admission gate keeps inference itself to one at a time. The master process
never imports the app, so it stays a few tens of MB.
"""
from __future__ import annotations

import json
import logging
import os
import sys

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from . import check_memory, ensure_model
from .catalog import CATALOG
from .config import ConfigError, Settings
from .engines import settings_choice

log = logging.getLogger("service")


# glibc malloc, tuned for a process whose big buffers (activations, images) come and go:
# a fixed mmap threshold returns every buffer over 64 KiB to the system when freed
# (the default threshold climbs to 32 MiB and parks them in the heap for good), and two
# arenas stop each request thread from growing a heap of its own. Measured with
# `python -m service bench`: RSS after 60 requests 886 → 118 MB (u2netp), 951 → 154 MB
# (isnet-general-tiny); peak 1039 → 353 MB and 1560 → 710 MB (README, "Memory").
# Those mmap'd buffers cost a page fault per 4 KiB each time they are touched (about
# 400,000 per IS-Net run); glibc's hugetlb tunable asks for transparent huge pages
# on them (madvise), where the kernel allows it: 1.28 M → 0.32 M faults over a
# bare-run benchmark, a run 3.8 → 3.5 s, the same peak. The numpy steps around the
# run, which make many short-lived temporaries, switch to the heap for their span
# (service/memory.py, heap_buffers).
MALLOC_DEFAULTS = {
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": "65536",
    "MALLOC_TRIM_THRESHOLD_": "131072",
    "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
}


def apply_malloc_defaults() -> None:
    """Re-execute this process once with MALLOC_DEFAULTS in its environment.

    glibc reads these variables when the process starts, so setting them later
    has no effect; values already in the environment are kept.
    """
    missing = {k: v for k, v in MALLOC_DEFAULTS.items() if k not in os.environ}
    if missing:
        os.environ.update(missing)
        os.execv(sys.executable, sys.orig_argv)


def _write_json_error(sock, status: int, reason: str, message: str) -> None:
    """gunicorn's error answer (``gunicorn.util.write_error``) in the API's JSON shape."""
    code = "_".join(reason.lower().split()) or "error"
    body = json.dumps({"error": message or reason, "code": code}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"X-Content-Type-Options: nosniff\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


class JsonErrorWorker(ThreadWorker):
    """gunicorn's gthread worker, answering what never reaches Flask in JSON too.

    gunicorn itself answers a request it can't parse (a bad request line, a
    header over its limits, a bad chunk) with a small HTML page; this worker
    swaps the one function that writes it. Run plain gunicorn with
    ``-k service.server.JsonErrorWorker`` to get the same.
    """

    def init_process(self):
        util.write_error = _write_json_error
        super().init_process()


def gunicorn_options(settings: Settings) -> dict:
    return {
        "bind": f"{settings.host}:{settings.port}",
        "workers": 1,
        "worker_class": "service.server.JsonErrorWorker",
        "threads": settings.web_threads,
        # A 1024² IS-Net run takes seconds on one slow core; gthread workers
        # heartbeat from their main loop, so this bounds a stuck worker, not a request.
        "timeout": 120,
        "graceful_timeout": 30,
        "keepalive": 5,
        "accesslog": None,  # the app writes one JSON line per request (service/requestlog.py)
        "errorlog": "-",
        "loglevel": "info",
        # gunicorn ≥ 25 opens a control socket under $HOME: not wanted in a
        # read-only container, and two servers on one machine would share it.
        "control_socket_disable": True,
    }


def serve(app_uri: str) -> None:
    """Fetch the model if needed, then run gunicorn on ``app_uri`` ("module:variable")."""
    apply_malloc_defaults()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        log.error("%s", exc)
        sys.exit(1)
    try:
        build = settings_choice(CATALOG[settings.model], settings).build  # EngineUnavailable: one line
        check_memory(settings.model, build)  # before a download it could never use
        ensure_model(settings, build)
    except (MemoryError, RuntimeError) as exc:
        if not settings.fallback:
            log.error("%s", exc)
            sys.exit(1)
        # the worker gives way to the fallback model when it loads (service._load_engine)
        log.warning("%s", str(exc).splitlines()[0])

    from gunicorn.app.base import BaseApplication
    from gunicorn.util import import_app

    class Server(BaseApplication):
        def load_config(self):
            for key, value in gunicorn_options(settings).items():
                self.cfg.set(key, value)

        def load(self):
            return import_app(app_uri)

    Server().run()
