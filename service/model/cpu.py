"""What this CPU can do, read from the CPU itself (/proc/cpuinfo), not from an engine's lists.

Two readings, for two purposes:

- :func:`cpu_classes`: the instruction classes the engines' kernels are chosen by (AVX2, AVX-VNNI,
  AVX512, AVX512-VNNI, AVX512_BF16, AMX), capped by ``ONEDNN_MAX_CPU_ISA`` where it is set, as
  oneDNN (OpenVINO's CPU kernels) caps itself. OpenVINO still lists BF16 among its capabilities
  under such a cap and then fails at compile, so the choice of precision reads these classes.
- :func:`integer_class`: the best class for ONNX Runtime's int8 kernels, which ignore oneDNN's cap.

And how many of its cores this process may use (:func:`usable_cores`), which sets the engine's
threads where BG_REMOVAL_THREADS is ``auto`` (:func:`auto_threads`).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping

# The classes, lowest first, each with the cpuinfo flags that make it up.
CLASSES = (
    ("AVX2", ("avx2", "fma")),
    ("AVX-VNNI", ("avx_vnni",)),
    ("AVX512", ("avx512f", "avx512bw", "avx512vl", "avx512dq")),
    ("AVX512-VNNI", ("avx512_vnni",)),
    ("AVX512_BF16", ("avx512_bf16",)),
    ("AMX-INT8", ("amx_int8", "amx_tile")),
    ("AMX-BF16", ("amx_bf16", "amx_tile")),
)
BF16_CLASSES = ("AVX512_BF16", "AMX-BF16")        # dot products of bf16 pairs in hardware
# ONEDNN_MAX_CPU_ISA's values (oneDNN's names) → the highest class of CLASSES they allow.
ONEDNN_CAPS = {
    "SSE41": None, "AVX": None, "AVX2": "AVX2", "AVX2_VNNI": "AVX-VNNI", "AVX2_VNNI_2": "AVX-VNNI",
    "AVX512_CORE": "AVX512", "AVX512_CORE_VNNI": "AVX512-VNNI", "AVX512_CORE_BF16": "AVX512_BF16",
    "AVX512_CORE_FP16": "AVX512_BF16", "AVX512_CORE_AMX": "AMX-BF16", "AVX512_CORE_AMX_FP16": "AMX-BF16",
    "AVX10_1_512_AMX": "AMX-BF16", "AVX10_1_512_AMX_FP16": "AMX-BF16", "DEFAULT": "AMX-BF16", "ALL": "AMX-BF16",
}

# The integer-instruction classes ONNX Runtime has int8 kernels for, best first: (cpuinfo flag, name).
INTEGER_CLASSES = (("amx_int8", "AMX"), ("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI"), ("avx2", "AVX2"))
# Classes whose u8×s8 products are summed in 32 bits (the others pair them into 16 bits, which saturate).
EXACT_U8S8 = ("AMX", "AVX512-VNNI", "AVX-VNNI")


def cpu_info() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.split("\n\n")[0].splitlines():
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    return fields


def _flags() -> set[str]:
    return set(cpu_info().get("flags", "").split())


def cpu_classes(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """This CPU's classes (names of CLASSES, lowest first) under ``ONEDNN_MAX_CPU_ISA`` (from
    ``env``, default the environment) where that is set."""
    flags = _flags()
    found = [name for name, needs in CLASSES if all(flag in flags for flag in needs)]
    cap = (os.environ if env is None else env).get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if cap and cap in ONEDNN_CAPS:
        order = [name for name, _ in CLASSES]
        highest = ONEDNN_CAPS[cap]
        limit = order.index(highest) if highest else -1
        found = [name for name in found if order.index(name) <= limit]
    return tuple(found)


def has_bf16(classes: tuple[str, ...]) -> bool:
    return any(name in classes for name in BF16_CLASSES)


def describe_classes(classes: tuple[str, ...]) -> str:
    """"AVX2, AVX-VNNI, …" (or "no AVX2"), with the cap named where one applies."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    text = ", ".join(classes) or "no AVX2"
    return f"{text} (ONEDNN_MAX_CPU_ISA={cap})" if cap else text


def integer_class() -> str:
    """This CPU's best integer-instruction class for ONNX Runtime's int8 kernels: AMX,
    AVX512-VNNI, AVX-VNNI, AVX2, or "no AVX2"."""
    flags = _flags()
    return next((name for flag, name in INTEGER_CLASSES if flag in flags), "no AVX2")


def usable_cores() -> int:
    """The cores this process may use: its affinity (a container's cpuset), capped by the cgroup's
    CPU quota (cpu.max, a container's --cpus) where one is set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def auto_threads(device: str, workers: int = 0, cores: int | None = None) -> int:
    """BG_REMOVAL_THREADS=auto: on the CPU, the usable cores shared among the worker processes
    asked for (``workers``; 0, auto, is one on the CPU); on a GPU one, since the CPU only feeds it
    there and a worker runs on every core (docs/scaling.md). Threads cost no memory: one worker
    at 1 and at 2 threads peaked at 409 and 406 MB (docs/deploying.md)."""
    if device != "cpu":
        return 1
    return max(1, (usable_cores() if cores is None else cores) // max(1, workers))
