"""Where the model runs: BG_REMOVAL_DEVICE mapped to ONNX Runtime's execution providers.

``auto`` picks the best the installed onnxruntime offers (TensorRT, then CUDA, then the CPU);
``cpu``, ``cuda`` and ``tensorrt`` ask for one. A device that is asked for and missing stops the
start (DeviceUnavailable) unless BG_REMOVAL_FALLBACK is set, which serves on the CPU and says
why. ``onnxruntime-gpu`` (requirements-gpu.txt) brings CUDA and TensorRT; the plain package has
only the CPU.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}
# CUDA's arena grows only by what is asked and is capped, so one model cannot take the card.
CUDA_MEMORY_LIMIT = 2 * 1024**3


class DeviceUnavailable(RuntimeError):
    """The device asked for is not offered by the installed onnxruntime."""


@dataclass(frozen=True)
class Placement:
    """The device chosen for a session, what ONNX Runtime is asked for, and why."""
    requested: str
    device: str
    providers: list                       # names or (name, options) pairs, for InferenceSession
    fallback_reason: str | None = None


def place(requested: str, available: list[str], fallback: bool, cache_dir: Path) -> Placement:
    """The placement for ``requested`` (one of DEVICES) given ONNX Runtime's ``available``
    providers. Raises DeviceUnavailable when it is missing and ``fallback`` is off."""
    if requested == "auto":
        device = next(d for d in ("tensorrt", "cuda", "cpu") if PROVIDERS[d] in available)
        reason = None
    elif PROVIDERS[requested] in available:
        device, reason = requested, None
    else:
        reason = (f"BG_REMOVAL_DEVICE={requested}: {PROVIDERS[requested]} is not in this onnxruntime "
                  f"(it has {', '.join(available)}); install requirements-gpu.txt on a machine with a GPU")
        if not fallback:
            raise DeviceUnavailable(reason + ", or set BG_REMOVAL_FALLBACK=true to serve on the CPU")
        device = "cpu"
    cuda = ("CUDAExecutionProvider", {"gpu_mem_limit": CUDA_MEMORY_LIMIT,
                                      "arena_extend_strategy": "kSameAsRequested"})
    providers: list = {
        "cpu": ["CPUExecutionProvider"],
        "cuda": [cuda, "CPUExecutionProvider"],
        "tensorrt": [("TensorrtExecutionProvider", {"trt_engine_cache_enable": True,
                                                    "trt_engine_cache_path": str(cache_dir)}),
                     cuda, "CPUExecutionProvider"],
    }[device]
    return Placement(requested, device, providers, reason)


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
