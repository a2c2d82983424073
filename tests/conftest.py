"""Shared fixtures: real models, real photos, a Flask app and client, a CLI runner, live servers.

Models are fetched once per session into ``$MODEL_DIR`` (CI sets it to a
cache) or a session temp dir, from ``$BG_MODEL_MIRROR`` or ``../shared/models``
when that exists, else from the catalog's own sources. Photos are fetched the
same way (:mod:`tools.photos`), so the suite needs nothing beside the clone.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from PIL import Image

from .support import API_KEY, CORS_ORIGIN, ROOT, mirror, start_server


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A directory holding verified u2netp, isnet-general-tiny, isnet-general-int8, isnet-general-ir and
    isnet-general-gpu files, and the files they are built from (rembg's u2netp, the fp16 IS-Net), which
    tests rebuild from."""
    from service.model.catalog import CATALOG
    from service.model.fetch import fetch_model

    directory = Path(os.environ.get("MODEL_DIR") or tmp_path_factory.mktemp("models"))
    source = mirror()
    for name in ("u2netp-rembg", "u2netp", "isnet-general-use-fp16", "isnet-general-tiny", "isnet-general-int8",
                 "isnet-general-ir", "isnet-general-gpu"):
        fetch_model(CATALOG[name], directory, Path(source) if source else None, show_progress=False)
    return directory


@pytest.fixture(scope="session")
def base_env(model_dir) -> dict[str, str]:
    """Environment for child processes: the test model dir, no inherited model choice."""
    env = {k: v for k, v in os.environ.items() if k not in ("BG_REMOVAL_MODEL", "PORT", "API_KEY")}
    env.update(MODEL_DIR=str(model_dir), PYTHONUNBUFFERED="1")
    source = mirror()
    if source:
        env["BG_MODEL_MIRROR"] = source
    return env


@pytest.fixture(scope="session")
def app(model_dir):
    from service import create_app

    return create_app({"BG_REMOVAL_MODEL": "u2netp", "MODEL_DIR": str(model_dir)})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def run_cli(base_env, tmp_path):
    """Run ``python -m service ARGS`` in a child process; returns the CompletedProcess."""
    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 300):
        return subprocess.run([sys.executable, "-m", "service", *map(str, args)], cwd=ROOT,
                              env={**base_env, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout)
    return run


@pytest.fixture(scope="session")
def u2netp_server(base_env, tmp_path_factory):
    server = start_server({**base_env, "BG_REMOVAL_MODEL": "u2netp"},
                          tmp_path_factory.mktemp("u2netp-server") / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def keyed_server(base_env, tmp_path_factory):
    """u2netp with API_KEY (support.API_KEY), also on /metrics, and one CORS origin (support.CORS_ORIGIN)."""
    env = {**base_env, "BG_REMOVAL_MODEL": "u2netp", "API_KEY": API_KEY, "CORS_ORIGINS": CORS_ORIGIN,
           "METRICS_REQUIRE_KEY": "true"}
    server = start_server(env, tmp_path_factory.mktemp("keyed-server") / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def default_server(base_env, tmp_path_factory):
    """The service exactly as `python app_isnet_tiny.py` starts it: the default model."""
    server = start_server(dict(base_env), tmp_path_factory.mktemp("default-server") / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def photos() -> dict[str, Path]:
    """The sample photos (:data:`tools.photos.PHOTOS`) by name, verified."""
    from tools.photos import fetch_photos

    return {path.stem: path for path in fetch_photos()}


@pytest.fixture(scope="session")
def sample_photo(photos, tmp_path_factory) -> Path:
    """A person, as a JPEG such as a phone or camera uploads (the astronaut photo)."""
    path = tmp_path_factory.mktemp("photo") / "astronaut.jpg"
    with Image.open(photos["astronaut"]) as image:
        image.convert("RGB").save(path, "JPEG", quality=92)
    return path


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    """Fail the run if any process the tests started outlived them (after fixture teardown)."""
    import psutil

    left = psutil.Process().children(recursive=True)
    if not left:
        return
    names = []
    for process in left:
        try:
            names.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
            process.kill()
        except psutil.NoSuchProcess:
            pass
    session.config.get_terminal_writer().line(
        "processes left behind by the tests (now killed):\n  " + "\n  ".join(names), red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
