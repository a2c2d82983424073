"""BG_REMOVAL_DEVICE, BG_REMOVAL_FALLBACK and the model catalog's memory figures, on this CPU-only
machine: the choice, the refusal and the fallbacks are real; CUDA and TensorRT themselves are not run."""
from __future__ import annotations

import pytest

from service.model.catalog import CATALOG
from service.config import Settings
from service.model.device import CUDA_MEMORY_LIMIT, DeviceUnavailable, Placement, Probe, assigned_device, place, probe
from service.model.engines import settings_choice
from tools.cgroup import CgroupUnavailable, MemoryCgroup

from .support import cap_address_space, start_server

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


GPU_HOST = Probe(True, 1, {})
NO_TENSORRT = Probe(True, 1, {"tensorrt": "TensorRT's libraries are not installed (libnvinfer.so.10: cannot open "
                                          "shared object file)"})
NO_GPU = Probe(True, 0, {"cuda": "no NVIDIA driver (libcuda.so.1) on this host",
                         "tensorrt": "no NVIDIA driver (libcuda.so.1) on this host"})
CPU_BUILD = Probe(False, 0, {"cuda": "this onnxruntime has no GPU providers", "tensorrt": "this onnxruntime has no GPU providers"})


def test_auto_takes_tensorrt_then_cuda_where_they_run_then_the_cpu(tmp_path):
    placement = place("auto", GPU_HOST, False, tmp_path)
    assert placement.device == "tensorrt" and placement.fallback_reason is None
    trt, cuda, cpu = placement.providers
    assert trt[1]["trt_engine_cache_path"] == str(tmp_path) and trt[1]["trt_engine_cache_enable"]
    assert trt[1]["trt_fp16_enable"]
    assert cuda == (CUDA, {"gpu_mem_limit": CUDA_MEMORY_LIMIT, "arena_extend_strategy": "kSameAsRequested"})
    assert cpu == CPU
    assert place("auto", NO_TENSORRT, False, tmp_path).device == "cuda"  # no red EP error: TensorRT not asked
    assert place("auto", NO_TENSORRT, False, tmp_path).providers[0][0] == CUDA
    assert place("auto", CPU_BUILD, False, tmp_path) == Placement("auto", "cpu", [CPU], None)


def test_auto_on_a_gpu_build_without_a_gpu_runs_on_the_cpu_and_says_why(tmp_path):
    placement = place("auto", NO_GPU, False, tmp_path)
    assert placement.device == "cpu" and placement.providers == [CPU]
    assert placement.fallback_reason == "no GPU device can run: no NVIDIA driver (libcuda.so.1) on this host"


def test_a_device_that_cannot_run_is_refused_in_one_line_or_falls_back_with_its_reason(tmp_path):
    with pytest.raises(DeviceUnavailable) as refused:
        place("tensorrt", NO_TENSORRT, False, tmp_path)
    assert str(refused.value) == ("BG_REMOVAL_DEVICE=tensorrt cannot run here: TensorRT's libraries are not installed "
                                  "(libnvinfer.so.10: cannot open shared object file); or set BG_REMOVAL_FALLBACK=true "
                                  "to serve on the CPU")
    assert place("cuda", NO_TENSORRT, False, tmp_path).device == "cuda"
    placement = place("cuda", NO_GPU, True, tmp_path)
    assert placement.device == "cpu" and placement.providers == [CPU]
    assert placement.fallback_reason == "BG_REMOVAL_DEVICE=cuda cannot run here: no NVIDIA driver (libcuda.so.1) on this host"
    assert place("cpu", GPU_HOST, False, tmp_path) == Placement("cpu", "cpu", [CPU], None)


def test_the_device_reported_is_the_provider_onnx_runtime_assigned():
    assert assigned_device([TRT, CUDA, CPU]) == "tensorrt"
    assert assigned_device([CUDA, CPU]) == "cuda"
    assert assigned_device([CPU]) == "cpu"


def test_this_hosts_probe_finds_no_gpu_and_says_what_to_install():
    found = probe()
    assert found.gpus == 0 and not found.usable("cuda") and not found.usable("tensorrt") and found.usable("cpu")
    assert "requirements-gpu.txt" in found.missing["cuda"]  # the plain onnxruntime is installed here


@pytest.mark.parametrize("level", ["info", "debug"])
def test_the_server_refuses_to_start_on_a_missing_device_in_one_last_line(base_env, tmp_path, level):
    with pytest.raises(RuntimeError, match="exited with [1-9]"):
        start_server({**base_env, "BG_REMOVAL_MODEL": "u2netp", "BG_REMOVAL_DEVICE": "cuda", "LOG_LEVEL": level},
                     tmp_path / "server.log", timeout=120)
    log = (tmp_path / "server.log").read_text()
    last = log.strip().splitlines()[-1]
    assert last.endswith("ERROR service: the server cannot start: BG_REMOVAL_DEVICE=cuda cannot run here: this "
                         "onnxruntime has no GPU providers: install requirements-gpu.txt (onnxruntime-gpu) on a host "
                         "with an NVIDIA GPU; or set BG_REMOVAL_FALLBACK=true to serve on the CPU"), last
    assert ("Traceback" in log) == (level == "debug")  # a traceback only when asked for


def test_with_fallback_the_server_says_where_it_runs_and_why(base_env, tmp_path):
    server = start_server({**base_env, "BG_REMOVAL_MODEL": "u2netp", "BG_REMOVAL_DEVICE": "cuda",
                           "BG_REMOVAL_FALLBACK": "true"}, tmp_path / "server.log")
    try:
        device = server.get("/api/bg/status").json()["device"]
        assert device["requested"] == "cuda" and device["used"] == "cpu" and device["gpu"] is None
        assert device["fallback_reason"].startswith("BG_REMOVAL_DEVICE=cuda cannot run here: this onnxruntime has no "
                                                    "GPU providers")
        assert server.get("/api/bg/health").json()["device"] == "cpu"
        assert "device fallback: BG_REMOVAL_DEVICE=cuda" in server.log.read_text()
    finally:
        server.stop()


def test_with_fallback_a_model_that_cannot_be_had_gives_way_to_u2netp(base_env, model_dir, tmp_path, sample_photo):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "u2netp.onnx").symlink_to(model_dir / "u2netp.onnx")
    env = {**base_env, "BG_REMOVAL_MODEL": "silueta", "MODEL_DIR": str(tmp_path / "models"),
           "BG_MODEL_MIRROR": str(mirror), "BG_REMOVAL_FALLBACK": "true"}
    server = start_server(env, tmp_path / "server.log", timeout=120)
    try:
        status = server.get("/api/bg/status").json()
        assert status["requested_model"] == "silueta" and status["model"] == "u2netp"
        assert "silueta could not be loaded" in status["model_fallback_reason"]
        response = server.post("/api/bg/remove", files={"file": ("p.jpg", sample_photo.read_bytes())})
        assert response.status_code == 200 and response.headers["X-Model-Used"].startswith("u2netp (")
    finally:
        server.stop()


# isnet-general-tiny's run at 1024² needs some 250 MB beyond what it maps when idle; u2netp's
# session and run need well under this headroom.
HEADROOM_MB = 150


def test_a_run_that_fails_for_memory_is_retried_on_u2netp(base_env, tmp_path, sample_photo):
    # ONNX Runtime's: OpenVINO allocates a run's buffers at load, so its runs cannot fail this way
    server = start_server({**base_env, "BG_REMOVAL_FALLBACK": "true", "BG_REMOVAL_ENGINE": "onnxruntime"},
                          tmp_path / "server.log")
    try:
        cap_address_space(server, HEADROOM_MB)
        for _ in range(2):
            response = server.post("/api/bg/remove", files={"file": ("p.jpg", sample_photo.read_bytes())})
            assert response.status_code == 200 and response.headers["X-Model-Used"].startswith("u2netp (")
        status = server.get("/api/bg/status").json()
        assert status["model"] == "isnet-general-tiny"  # it stays the model; each run tries it first
        assert status["runs_on_fallback_model"] == 2
        assert "std::bad_alloc" in server.log.read_text()
        cap_address_space(server, None)
        response = server.post("/api/bg/remove", files={"file": ("p.jpg", sample_photo.read_bytes())})
        assert response.status_code == 200 and response.headers["X-Model-Used"].startswith("isnet-general-tiny (")
    finally:
        assert server.stop() == 0


@pytest.fixture
def cgroup_300():
    try:
        group = MemoryCgroup(300)
    except CgroupUnavailable as exc:
        pytest.skip(str(exc))
    yield group
    group.remove()


def test_a_model_that_needs_more_than_the_containers_limit_is_refused_or_falls_back(base_env, cgroup_300, tmp_path):
    with pytest.raises(RuntimeError, match="exited") as info:
        start_server(dict(base_env), tmp_path / "refused.log", preexec_fn=cgroup_300.enter)
    choice = settings_choice(CATALOG["isnet-general-tiny"], Settings())  # the build and engine chosen here
    need = CATALOG[choice.build].memory_at_work(choice.engine)
    assert f"isnet-general-tiny needs about {need} MB at work; this container's memory limit is 300 MB" in str(info.value)
    with pytest.raises(RuntimeError, match="exited") as info:  # refused before its 1 GB download
        start_server({**base_env, "BG_REMOVAL_MODEL": "birefnet-general"}, tmp_path / "big.log",
                     preexec_fn=cgroup_300.enter)
    assert "birefnet-general needs at least 1145 MB at work; this container's memory limit is 300 MB" in str(info.value)
    server = start_server({**base_env, "BG_REMOVAL_FALLBACK": "true"}, tmp_path / "fallback.log",
                          preexec_fn=cgroup_300.enter)
    try:
        assert server.get("/api/bg/status").json()["model"] == "u2netp"
    finally:
        server.stop()


def test_models_lists_the_catalog_with_licences_and_memory(run_cli):
    result = run_cli("models")
    assert result.returncode == 0, result.stderr
    rows = {line.split("|")[1].strip(): line for line in result.stdout.splitlines()[2:]}
    assert "isnet-general-tiny (default)" in rows and "| 385 |" in rows["isnet-general-tiny (default)"]
    assert "AGPL-3.0" in rows["isnet-general-use-fp16"] and "Apache-2.0" in rows["u2netp"]
    # the larger models: memory a floor from their architecture (their files are not here to measure)
    assert "| ≥ 1145 |" in rows["birefnet-general"] and "MIT" in rows["birefnet-general"]
    assert "non-commercial" in rows["rmbg-2.0"].lower() and "CC BY-NC 4.0" in rows["rmbg-2.0"]
    assert all(name in rows for name in ("birefnet-general-lite", "birefnet-portrait", "isnet-anime"))
