"""Settings come from the environment, typed, and a bad value fails at start."""
from __future__ import annotations

from pathlib import Path

import pytest

from service.config import ConfigError, Settings


def test_defaults():
    settings = Settings.from_env({"HOME": "/home/u"})
    assert settings.model == "isnet-general-tiny"
    assert settings.threads == 1 and settings.port == 5000
    assert settings.max_file_size == 8 * 1024 * 1024 and settings.max_file_size_mb == 8
    assert settings.max_dimension == 1024
    assert settings.model_dir == Path("/home/u/.cache/bg-removal") or settings.model_dir.name == "bg-removal"
    assert settings.mirror is None


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
