"""Where the model runs: BG_REMOVAL_DEVICE, checked against what this host can really run.

``auto`` takes TensorRT where its libraries load and a GPU answers, then CUDA likewise, then the
CPU (whose fastest engine service/model/engines chooses); ``cpu``, ``cuda`` and ``tensorrt`` ask for one.
A GPU device asked for that cannot run stops the start in one line naming what is missing
(DeviceUnavailable), unless BG_REMOVAL_FALLBACK is set: then the CPU serves and says why.

What can run is read once per process by :func:`probe`, before ONNX Runtime is asked for anything:
whether the installed onnxruntime is the GPU build (requirements-gpu.txt), whether a GPU answers
(the driver's ``cuInit`` and device count), and whether ONNX Runtime's CUDA and TensorRT provider
libraries load with every library they need (cuDNN, cuBLAS, TensorRT's libnvinfer). ONNX Runtime
itself, asked for a provider that cannot load, logs a red error and quietly runs on what is left;
asking only for what loads keeps the log clean, and the engine still reports the providers the
session really got (:mod:`service.model.engines.onnxruntime_engine`).
"""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}
GPU_DEVICES = ("tensorrt", "cuda")  # best first
# CUDA's arena grows only by what is asked and is capped, so one model cannot take the card.
CUDA_MEMORY_LIMIT = 2 * 1024**3
# The provider libraries of onnxruntime-gpu, in onnxruntime/capi.
PROVIDER_LIBRARIES = {"cuda": "libonnxruntime_providers_cuda.so", "tensorrt": "libonnxruntime_providers_tensorrt.so"}


class DeviceUnavailable(RuntimeError):
    """The device asked for cannot run here; the message says what is missing."""


@dataclass(frozen=True)
class Probe:
    """What this host can run the model on. ``gpus``: the GPUs the driver counts; ``missing``:
    for each GPU device that cannot run, why (the first thing missing, in words a user can act on)."""
    gpu_build: bool                                   # onnxruntime-gpu is installed
    gpus: int = 0
    missing: dict = field(default_factory=dict)

    def usable(self, device: str) -> bool:
        return device == "cpu" or (device in GPU_DEVICES and device not in self.missing)


def preload_gpu_libraries() -> None:
    """Load the GPU libraries pip brought, which the dynamic loader does not look for: CUDA and
    cuDNN from the nvidia-* wheels (``onnxruntime-gpu[cuda,cudnn]``, through ONNX Runtime's own
    ``preload_dlls``) and TensorRT from ``tensorrt-cu13-libs`` (requirements-gpu-tensorrt.txt).
    Libraries installed on the system need none of this; what is not there is left to the probe."""
    import ctypes

    try:
        import onnxruntime

        onnxruntime.preload_dlls()
    except Exception:  # an onnxruntime without it, or nvidia-* wheels that are not there
        pass
    spec = importlib.util.find_spec("tensorrt_libs")
    for folder in (spec.submodule_search_locations if spec and spec.submodule_search_locations else []):
        for name in ("libnvinfer.so.10", "libnvinfer_plugin.so.10", "libnvonnxparser.so.10"):
            try:
                ctypes.CDLL(os.path.join(folder, name), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                pass


def _probe_here(capi: str, libraries: dict[str, str]) -> dict:
    """In the probe's child process: the GPUs the driver counts, and for each provider library
    of ``libraries`` that cannot load, what it lacks."""
    import ctypes

    preload_gpu_libraries()
    found: dict = {"gpus": 0, "missing": {}}
    gpu = None
    try:
        driver = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(0)
        status = driver.cuInit(0) or driver.cuDeviceGetCount(ctypes.byref(count))
        found["gpus"] = count.value
        if status == 100 or (status == 0 and count.value == 0):
            gpu = "no NVIDIA GPU answers (the driver counts none)"
        elif status:
            gpu = f"the NVIDIA driver did not start (CUDA error {status})"
    except OSError:
        gpu = "no NVIDIA driver (libcuda.so.1) on this host"
    try:
        ctypes.CDLL(os.path.join(capi, "libonnxruntime_providers_shared.so"), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        gpu = gpu or f"onnxruntime's provider libraries do not load: {exc}"
    for device, library in libraries.items():
        path = os.path.join(capi, library)
        try:
            if gpu:
                raise OSError(gpu)
            ctypes.CDLL(path)
        except OSError as exc:
            found["missing"][device] = str(exc).replace(path + ": ", "")
    return found


def onnxruntime_gpu_installed() -> bool:
    """Whether the installed onnxruntime is the GPU build, read from its package metadata:
    importing it to ask costs its memory in a server that may run OpenVINO."""
    try:
        importlib.metadata.distribution("onnxruntime-gpu")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def _why(detail: str) -> str:
    """``detail`` (a library that did not load, a driver that did not answer) in words a user can act on."""
    if "libnvinfer" in detail:
        return (f"TensorRT's libraries are not installed ({detail}): install TensorRT 10 for CUDA 13 "
                "(pip install -r requirements-gpu-tensorrt.txt) or use BG_REMOVAL_DEVICE=cuda")
    if "cannot open shared object" in detail:
        return (f"a CUDA library is missing ({detail}): install CUDA 13 and cuDNN 9 "
                "(pip install 'onnxruntime-gpu[cuda,cudnn]' brings both)")
    return detail


@functools.cache
def probe() -> Probe:
    """This host's :class:`Probe`, read once per process (about 0.2 s where onnxruntime-gpu is
    installed: a child process; nothing at all where it is not)."""
    if not onnxruntime_gpu_installed():
        return Probe(False, 0, {d: "this onnxruntime has no GPU providers: install requirements-gpu.txt "
                                   "(onnxruntime-gpu) on a host with an NVIDIA GPU" for d in GPU_DEVICES})
    spec = importlib.util.find_spec("onnxruntime")
    capi = Path(next(iter(spec.submodule_search_locations))) / "capi"
    present = {d: lib for d, lib in PROVIDER_LIBRARIES.items() if (capi / lib).exists()}
    absent = {d: f"{PROVIDER_LIBRARIES[d]} is not in this onnxruntime" for d in GPU_DEVICES if d not in present}
    try:
        # in a child: a driver initialised in gunicorn's master would be unusable in the workers
        # it forks, and a library that fails to load leaves nothing behind in the server
        code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from service.model.device import _probe_here; "
                "print(json.dumps(_probe_here(sys.argv[2], json.loads(sys.argv[3]))))")
        result = subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parents[2]), str(capi),
                                 json.dumps(present)], capture_output=True, text=True, timeout=60)
        found = json.loads(result.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        return Probe(True, 0, {d: f"the GPU probe failed: {exc}" for d in GPU_DEVICES})
    missing = {d: _why(why) for d, why in found["missing"].items()}
    return Probe(True, found["gpus"], {**absent, **missing})


@dataclass(frozen=True)
class Placement:
    """The device chosen for a session, what ONNX Runtime is asked for, and why it is not the
    device requested (None when it is, or when ``auto`` found no GPU build to try)."""
    requested: str
    device: str
    providers: list                       # names or (name, options) pairs, for InferenceSession
    fallback_reason: str | None = None


def resolve(requested: str, found: Probe, fallback: bool) -> tuple[str, str | None]:
    """(the device that serves ``requested`` on a host ``found`` so, why it differs or None).
    Raises DeviceUnavailable for a GPU device asked for by name that cannot run, unless ``fallback``."""
    if requested == "auto":
        device = next((d for d in GPU_DEVICES if found.usable(d)), "cpu")
        # with the GPU build installed, a user expects a GPU: say why none serves
        reason = f"no GPU device can run: {found.missing['cuda']}" if device == "cpu" and found.gpu_build else None
        return device, reason
    if found.usable(requested):
        return requested, None
    reason = f"BG_REMOVAL_DEVICE={requested} cannot run here: {found.missing[requested]}"
    if not fallback:
        raise DeviceUnavailable(reason + "; or set BG_REMOVAL_FALLBACK=true to serve on the CPU")
    return "cpu", reason


def place(requested: str, found: Probe, fallback: bool, cache_dir: Path) -> Placement:
    """The placement for ``requested`` (one of DEVICES) on a host ``found`` so (:func:`probe`).
    TensorRT builds its engines in fp16 and keeps them in ``cache_dir`` (minutes the first time)."""
    device, reason = resolve(requested, found, fallback)
    cuda = ("CUDAExecutionProvider", {"gpu_mem_limit": CUDA_MEMORY_LIMIT,
                                      "arena_extend_strategy": "kSameAsRequested"})
    providers: list = {
        "cpu": ["CPUExecutionProvider"],
        "cuda": [cuda, "CPUExecutionProvider"],
        "tensorrt": [("TensorrtExecutionProvider", {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                                                    "trt_engine_cache_path": str(cache_dir)}),
                     cuda, "CPUExecutionProvider"],
    }[device]
    return Placement(requested, device, providers, reason)


def assigned_device(providers: list[str]) -> str:
    """The device of the first provider ONNX Runtime really assigned a session (its ``get_providers()``)."""
    names = {name: device for device, name in PROVIDERS.items()}
    return next((names[p] for p in providers if p in names), "cpu")


def gpu_description() -> dict | None:
    """The first GPU's name and memory from nvidia-smi, where there is one."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        line = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None
    name, _, memory = line.partition(",")
    return {"name": name.strip(), "memory": memory.strip()}

