"""requirements-gpu.txt installed alone in a clean venv on this CPU-only machine, with the real
onnxruntime-gpu and its CUDA and TensorRT providers, whose libraries cannot load here: the server
starts on it, runs what it runs without the GPU requirements and says why it is on the CPU;
``cuda`` and ``tensorrt`` asked for by name are refused in one line, or fall back when allowed;
ONNX Runtime's own errors stay out of the log."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .support import ROOT, free_port, start_server

ORT_NOISE = ("EP Error", "[E:onnxruntime", "Failed to load library", "Traceback")


@pytest.fixture(scope="session")
def gpu_python(tmp_path_factory) -> Path:
    """The Python of a venv holding requirements-gpu.txt and nothing else."""
    venv = tmp_path_factory.mktemp("gpu-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r",
                    str(ROOT / "requirements-gpu.txt")], check=True, timeout=1200)
    return python


def start(gpu_python: Path, env: dict[str, str], log: Path):
    port = free_port()
    return start_server({**env, "PORT": str(port), "HOST": "127.0.0.1"}, log, timeout=120,
                        command=[str(gpu_python), "app_isnet_tiny.py"], port=port)


def test_the_gpu_build_is_what_the_venv_holds(gpu_python):
    out = subprocess.run([str(gpu_python), "-c", "import onnxruntime as o; from service.model.device import probe; "
                          "print(o.get_available_providers()); print(probe())"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "CUDAExecutionProvider" in out and "TensorrtExecutionProvider" in out  # offered, yet cannot run here
    assert "gpu_build=True, gpus=0" in out and "no NVIDIA driver (libcuda.so.1) on this host" in out


def test_on_a_host_without_a_gpu_it_serves_what_the_cpu_runs_best_and_says_why(gpu_python, base_env, default_server,
                                                                                   tmp_path, sample_photo):
    server = start(gpu_python, dict(base_env), tmp_path / "server.log")
    try:
        status = server.get("/api/bg/status").json()
        assert status["model_used"] == default_server.get("/api/bg/status").json()["model_used"]
        assert status["device"]["used"] == "cpu" and status["device"]["requested"] == "auto"
        assert status["device"]["fallback_reason"] == "no GPU device can run: no NVIDIA driver (libcuda.so.1) on this host"
        assert server.get("/api/bg/health").json()["device"] == "cpu"
        response = server.post("/api/bg/remove", files={"file": ("p.jpg", sample_photo.read_bytes())})
        assert response.status_code == 200 and response.headers["X-Model-Used"] == status["model_used"]
    finally:
        assert server.stop() == 0
    log = server.log.read_text()
    assert not any(noise in log for noise in ORT_NOISE), log


@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_a_gpu_device_asked_for_by_name_is_refused_in_one_line(gpu_python, base_env, tmp_path, device):
    with pytest.raises(RuntimeError, match="exited with [1-9]"):
        start(gpu_python, {**base_env, "BG_REMOVAL_DEVICE": device}, tmp_path / "server.log")
    lines = (tmp_path / "server.log").read_text().strip().splitlines()
    assert lines[-1].endswith(f"ERROR service: the server cannot start: BG_REMOVAL_DEVICE={device} cannot run here: "
                              "no NVIDIA driver (libcuda.so.1) on this host; or set BG_REMOVAL_FALLBACK=true to "
                              "serve on the CPU"), lines[-1]
    assert not any(noise in line for line in lines for noise in ORT_NOISE)


def test_with_fallback_onnx_runtime_serves_on_the_cpu_and_reports_the_providers_it_got(gpu_python, base_env,
                                                                                       tmp_path, sample_photo):
    env = {**base_env, "BG_REMOVAL_MODEL": "u2netp", "BG_REMOVAL_ENGINE": "onnxruntime",
           "BG_REMOVAL_DEVICE": "tensorrt", "BG_REMOVAL_FALLBACK": "true"}
    server = start(gpu_python, env, tmp_path / "server.log")
    try:
        device = server.get("/api/bg/status").json()["device"]
        assert device["used"] == "cpu" and device["providers"] == ["CPUExecutionProvider"]
        assert device["fallback_reason"].startswith("BG_REMOVAL_DEVICE=tensorrt cannot run here: no NVIDIA driver")
        response = server.post("/api/bg/remove", files={"file": ("p.jpg", sample_photo.read_bytes())})
        assert response.status_code == 200 and response.headers["X-Model-Used"] == "u2netp (onnxruntime, f32)"
    finally:
        assert server.stop() == 0
    log = server.log.read_text()
    assert "device fallback: BG_REMOVAL_DEVICE=tensorrt cannot run here" in log
    assert not any(noise in log for noise in ORT_NOISE), log
