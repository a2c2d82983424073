"""The deploy files say what they must (no Docker engine runs here, so this is read, not built)."""
from __future__ import annotations

import json
import re

from service.server import MALLOC_DEFAULTS

from .support import ROOT

DOCKERFILE = (ROOT / "Dockerfile.isnet-tiny").read_text()


def test_dockerfile_runtime_stage_is_slim_non_root_and_healthchecked():
    runtime = DOCKERFILE.rsplit("FROM ", 1)[1]
    assert re.match(r"python:3\.\d+-slim\b", runtime)
    user = re.search(r"^USER (\S+)", runtime, re.M)
    assert user and user.group(1) not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/api/bg/health", runtime, re.M)
    assert re.search(r'^CMD \["python", "app_isnet_tiny.py"\]', runtime, re.M)


def test_dockerfile_fetches_the_model_at_build_time_and_sets_the_memory_environment():
    assert "requirements-isnet-tiny.txt" in DOCKERFILE
    assert re.search(r"^RUN .*python -m service fetch .*isnet-general-tiny", DOCKERFILE, re.M)
    for name, value in MALLOC_DEFAULTS.items():
        assert f"{name}={value}" in DOCKERFILE
    assert "BG_REMOVAL_THREADS=1" in DOCKERFILE


def test_railway_builds_the_dockerfile_and_checks_health():
    config = json.loads((ROOT / "railway.json").read_text())
    assert config["build"] == {"builder": "DOCKERFILE", "dockerfilePath": "Dockerfile.isnet-tiny"}
    assert config["deploy"]["healthcheckPath"] == "/api/bg/health"
    assert config["deploy"]["healthcheckTimeout"] >= 60
    assert config["deploy"]["restartPolicyType"] == "ON_FAILURE"


def test_runtime_requirements_are_pinned():
    lines = [l.strip() for l in (ROOT / "requirements-isnet-tiny.txt").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    names = {re.split(r"==", l)[0].lower() for l in lines}
    assert all("==" in l for l in lines)
    assert {"flask", "onnxruntime", "pillow", "numpy", "psutil", "requests", "gunicorn"} <= names
