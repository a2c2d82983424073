"""The model a process serves, held in one place: loaded once at start (giving way to u2netp
where BG_REMOVAL_FALLBACK allows and the configured model cannot be had), run through the one
pipeline, and retried on u2netp on the CPU when a run fails for memory. The HTTP app, the job
worker and the CLI each hold one; nothing else loads a model.

Also here: the checks a start makes before it loads anything (a model's memory against the
container's limit, its file fetched and verified), which gunicorn's master runs too, so this
module imports no numpy, Pillow, Flask or engine at import time.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Settings
    from .engines import Engine
    from ..pipeline import Options, Result

log = logging.getLogger("service")

def ensure_model(settings, build: str | None = None) -> "os.PathLike":
    """Path of catalog build ``build`` (default: the one that serves the configured model here,
    as service/model/engines chooses it), verified; fetched in a child process if missing.

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
    # the fetch's own lines (progress every 2 s, each build step) go out as they come, unprefixed
    child = subprocess.Popen([sys.executable, "-m", "service", "fetch", spec.name], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    for line in child.stdout:
        sys.stderr.write(line)
        sys.stderr.flush()
        lines.append(line.strip())
    if child.wait() != 0 or not verify(path, spec.checksum):
        asked = settings.model if spec.name == settings.model else f"{settings.model} (its build {spec.name} here)"
        raise RuntimeError(f"model {asked} is not in {settings.model_dir} and could not be fetched: "
                           f"{fetch_hint(lines, spec.name)}")
    return path


def fetch_hint(lines: list[str], build: str) -> str:
    """What to do about a failed fetch, from its output: the tool to install where one was
    missing (npm), else where the files may come from instead."""
    mirror = (f"set BG_MODEL_MIRROR to a folder that holds its files, or let this machine reach its source "
              f"(python -m service fetch {build} says more)")
    for line in reversed(lines):
        before, missing, install = line.rpartition(" is not installed: ")
        if missing:
            return f"{before.split()[-1]} is not installed: {install}; or {mirror}"
    return mirror


FALLBACK_MODEL = "u2netp"


def _warm_up(engine) -> None:
    """One run on a blank input before the worker takes requests: on a GPU the first run chooses
    cuDNN's kernels (and TensorRT builds its engine), which would otherwise fall on a user's photo."""
    import time

    from PIL import Image

    size = engine.spec.input_size
    started = time.perf_counter()
    engine.predict_mask(Image.new("RGB", (size, size)))
    log.info("warmed up on %s in %.1f s", engine.device, time.perf_counter() - started)


def check_memory(name: str, build: str | None = None, engine: str | None = None, workers: int = 1) -> None:
    """Raise MemoryError when catalog model ``name``, run as catalog build ``build`` (whose row's
    figure counts where it has one; OpenVINO's own where ``engine`` is it and the row has one) by
    ``workers`` worker processes, each with its copy, needs more memory at work than this
    container's limit (its cgroup) allows: checked before its file is fetched."""
    from .catalog import CATALOG
    from ..memory import cgroup_limit_mb

    spec, limit = CATALOG[name], cgroup_limit_mb()
    if build is not None and CATALOG[build].memory_mb:
        spec = CATALOG[build]
    need_mb = spec.memory_at_work(engine)
    if need_mb and limit and need_mb * workers > limit:
        need = "about" if spec.memory_measured else "at least"
        each = f" in each of {workers} workers (BG_REMOVAL_WORKERS)" if workers > 1 else ""
        raise MemoryError(f"{name} needs {need} {need_mb} MB at work{each}; this container's memory "
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
    loaded gives way to u2netp; a missing device gives way to the CPU (service/model/device.py). The
    fallback model's file is fetched at start too, so that a run that fails for memory later can
    be retried on it (:meth:`ModelHolder.cut_out`) without a download."""
    from .catalog import CATALOG
    from .device import DeviceUnavailable
    from .engines import EngineUnavailable, settings_choice

    try:
        engine, reason = load_engine(settings.model, settings), None
    except (DeviceUnavailable, EngineUnavailable):
        raise  # one line; the start stops (service/http/server.py says it)
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


class ModelHolder:
    """The engine a process serves, why the fallback model serves instead (``model_fallback``,
    None when it does not), and u2netp on the CPU for the runs that fail for memory.

    :meth:`load` builds one from the settings; tests and callers that already hold an engine
    pass it in. :meth:`cut_out` is the pipeline's one entry for the server and the job worker.
    """

    def __init__(self, settings: Settings, engine: Engine, model_fallback: str | None = None):
        self.settings, self.engine, self.model_fallback = settings, engine, model_fallback
        self.fallback_runs = 0           # runs answered by the fallback model after a failed allocation
        self._fallback: Engine | None = None
        self._lock = threading.Lock()

    @classmethod
    def load(cls, settings: Settings) -> "ModelHolder":
        """The configured model, loaded (and warmed up on a GPU). Raises ConfigError, MemoryError,
        EngineUnavailable, DeviceUnavailable or the fetch's error when it cannot be had."""
        engine, reason = _load_engine(settings)
        if engine.device != "cpu":
            _warm_up(engine)
        return cls(settings, engine, reason)

    def cut_out(self, data: bytes, options: Options, deadline: float | None) -> Result:
        """:func:`service.pipeline.cut_out` on the served engine; a run that fails for memory is
        retried once on u2netp on the CPU where BG_REMOVAL_FALLBACK allows (else OutOfMemory, 503)."""
        from ..errors import OutOfMemory
        from ..pipeline import cut_out

        try:
            return cut_out(data, self.engine, self.settings, options, deadline)
        except OutOfMemory as failure:
            engine = self._fallback_engine(failure)
            return cut_out(data, engine, self.settings, options, deadline)

    def _fallback_engine(self, failure) -> Engine:
        """u2netp on the CPU, loaded at the first run that needs it, then kept (about 100 MB at
        work). Raises ``failure`` again where there is no fallback or it can't be loaded either."""
        from ..memory import release_memory

        if not self.settings.fallback or self.engine.spec.name == FALLBACK_MODEL:
            raise failure
        release_memory()  # what the failed run left
        with self._lock:
            if self._fallback is None:
                try:
                    self._fallback = load_engine(FALLBACK_MODEL, self.settings, device="cpu")
                except Exception as exc:
                    log.error("fallback model %s could not be loaded: %s", FALLBACK_MODEL, exc)
                    raise failure from exc
            self.fallback_runs += 1
        log.warning("%s; this image goes to %s (BG_REMOVAL_FALLBACK)", failure.message, FALLBACK_MODEL)
        return self._fallback
