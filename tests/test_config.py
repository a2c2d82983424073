"""Settings come from the environment, typed, and a bad value fails at start."""
from __future__ import annotations

from pathlib import Path

import pytest

from service.config import ConfigError, Settings


def test_defaults():
    settings = Settings.from_env({"HOME": "/home/u"})
    assert settings.model == "isnet-general-tiny"
    assert settings.threads == 0 and settings.port == 5000  # threads 0: auto, the usable cores
    assert settings.max_file_size == 8 * 1024 * 1024 and settings.max_file_size_mb == 8
    assert settings.max_dimension == 1024
    assert settings.model_dir == Path("/home/u/.cache/bg-removal") or settings.model_dir.name == "bg-removal"
    assert settings.mirror is None
    assert settings.host == "127.0.0.1"  # this machine only, unless HOST opens it
    assert (settings.workers, settings.concurrency) == (0, 0)  # auto (service/model/sizing.py)


def test_values_are_parsed():
    settings = Settings.from_env({
        "BG_REMOVAL_MODEL": "u2netp", "BG_REMOVAL_THREADS": "2", "MAX_FILE_SIZE_MB": "3",
        "MODEL_DIR": "/m", "BG_MODEL_MIRROR": "/mirror", "PORT": "8080", "XDG_CACHE_HOME": "/c",
    })
    assert (settings.model, settings.threads, settings.port) == ("u2netp", 2, 8080)
    assert settings.max_file_size == 3 * 1024 * 1024
    assert settings.model_dir == Path("/m") and settings.mirror == Path("/mirror")


def test_model_dir_follows_xdg_cache_home():
    assert Settings.from_env({"XDG_CACHE_HOME": "/c"}).model_dir == Path("/c/bg-removal")


@pytest.mark.parametrize("env, message", [
    ({"BG_REMOVAL_MODEL": "rembg-huge"}, "not a known model"),
    ({"BG_REMOVAL_THREADS": "two"}, "whole number"),
    ({"BG_REMOVAL_THREADS": "0"}, "between 1 and 64"),
    ({"MAX_FILE_SIZE_MB": "-1"}, "between"),
    ({"PORT": "70000"}, "between 1 and 65535"),
    ({"ALLOW_IMAGE_URL": "yes"}, "true, false"),
    ({"IMAGE_URL_ALLOW_NETWORKS": "10.0.0.0/8, intranet"}, "networks like"),
])
def test_bad_values_fail_loudly(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_create_app_refuses_bad_config(model_dir):
    from service import create_app

    with pytest.raises(ConfigError):
        create_app({"MODEL_DIR": str(model_dir), "MAX_DIMENSION": "huge"})


def test_the_server_listens_on_this_machine_only_unless_host_says_otherwise(base_env, tmp_path):
    import sys

    import psutil

    from .support import free_port, start_server

    port = free_port()
    env = {k: v for k, v in base_env.items() if k != "HOST"}
    server = start_server({**env, "BG_REMOVAL_MODEL": "u2netp", "PORT": str(port)}, tmp_path / "server.log",
                          command=[sys.executable, "app_isnet_tiny.py"], port=port)
    try:
        listening = {c.laddr.ip for c in psutil.Process(server.process.pid).net_connections("inet")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
        assert listening == {"127.0.0.1"}
    finally:
        server.stop()
    assert f"listening on 127.0.0.1:{port}, this machine only: HOST=0.0.0.0 opens it" in server.log.read_text()
