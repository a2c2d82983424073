"""Shared fixtures: real models, a Flask app and client, a CLI runner, live servers.

Models are fetched once per session into ``$MODEL_DIR`` (CI sets it to a
cache) or a session temp dir, from ``$BG_MODEL_MIRROR`` or ``../shared/models``
when that exists, else from the catalog's own sources.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .support import ROOT, SAMPLES, mirror, start_server


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A directory holding verified u2netp and isnet-general-tiny files (and rembg's u2netp,
    which u2netp is built from and the fetch tests serve)."""
    from service.catalog import CATALOG
    from service.fetch import fetch_model

    directory = Path(os.environ.get("MODEL_DIR") or tmp_path_factory.mktemp("models"))
    source = mirror()
    for name in ("u2netp-rembg", "u2netp", "isnet-general-tiny"):
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
def default_server(base_env, tmp_path_factory):
    """The service exactly as `python app_isnet_tiny.py` starts it: the default model."""
    server = start_server(dict(base_env), tmp_path_factory.mktemp("default-server") / "server.log")
    yield server
    server.stop()


@pytest.fixture
def sample_photo() -> Path:
    return SAMPLES / "images" / "girl-1.jpg"
