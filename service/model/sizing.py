"""How many worker processes serve, and how many images each runs at once: BG_REMOVAL_WORKERS
and BG_REMOVAL_CONCURRENCY, with ``auto`` worked out from the device, the cores and the settings.

Each worker process holds its own model (its own ONNX Runtime or OpenVINO session, its own CUDA
context on a GPU) and its own admission gate; each runs up to ``concurrency`` images at once,
whose steps outside the model (decoding, scaling, the foreground estimate, encoding) overlap
with one another and with the model's run. What ``auto`` picks, and why, is in docs/scaling.md:

- on the CPU, one worker running one image at a time: the model is the memory (about 400 MB for
  the default), and a 512 MB host holds one copy of it. More workers are for hosts with the memory
  for them (``bench --throughput`` measures what they give);
- on a GPU, where a run takes milliseconds and the steps outside the model bound the rate: a
  worker a core (at most ``GPU_MAX_WORKERS``, and as many as the host's and the card's memory
  hold), each with ``GPU_CONCURRENCY`` images at once.

API keys' rate limits are counted inside one process, so a server with a rate limit keeps one
worker (a setting that asks for more is refused at start).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError, Settings
from .cpu import usable_cores

# On a GPU, measured on an H200 host with 16 cores (docs/scaling.md): 16 workers × 4 images at
# once served 63–69 photos/s (53–55 on a second lease), 8 × 4 55–61, 8 × 2 54, 1 × 1 5; each
# worker held 1.4 GB of the host's memory and 1.9 GB of the card's (its CUDA context and an
# arena capped at 2 GiB).
GPU_MAX_WORKERS = 16
GPU_CONCURRENCY = 4
HOST_MB_PER_GPU_WORKER = 1500
GPU_MB_PER_WORKER = 2500


@dataclass(frozen=True)
class Plan:
    workers: int
    concurrency: int
    reason: str          # how the numbers were reached, for the start log

    @property
    def counts(self) -> tuple[int, int]:
        return self.workers, self.concurrency


def host_memory_mb() -> float:
    """The memory this process's container may use: its cgroup's limit, else the host's."""
    from ..memory import cgroup_limit_mb

    total = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    limit = cgroup_limit_mb()
    return min(limit, total) if limit and total else (limit or total or 0.0)


def gpu_memory_mb(gpu: dict | None) -> float | None:
    """The card's memory in MiB from :func:`service.model.device.gpu_description` ("143771 MiB")."""
    try:
        return float(gpu["memory"].split()[0]) if gpu else None
    except (KeyError, ValueError, IndexError):
        return None


def plan(settings: Settings, device: str, cores: int | None = None, host_mb: float | None = None,
         gpu_mb: float | None = None) -> Plan:
    """The :class:`Plan` for ``settings`` on ``device`` ("cpu", "cuda", "tensorrt") with ``cores``,
    ``host_mb`` of memory and a card of ``gpu_mb`` (defaults: this host's; an unknown card's
    memory does not bound the count). Raises ConfigError for several workers with a rate limit."""
    cores = usable_cores() if cores is None else cores
    if settings.workers > 1 and settings.rate_limit:
        raise ConfigError("BG_REMOVAL_WORKERS above 1 with RATE_LIMIT_PER_MINUTE: each worker would count "
                          "the keys' requests apart; keep one worker (auto) or drop the rate limit")
    if device == "cpu":
        workers, concurrency = 1, 1
        why = "on the CPU each worker holds the model's memory"
    else:
        host_mb = host_memory_mb() if host_mb is None else host_mb
        bounds = {f"{cores} cores": cores, f"at most {GPU_MAX_WORKERS}": GPU_MAX_WORKERS,
                  f"{host_mb / 1024:.0f} GB of memory": int(host_mb // HOST_MB_PER_GPU_WORKER)}
        if gpu_mb:
            bounds[f"the card's {gpu_mb / 1024:.0f} GB"] = int(gpu_mb // GPU_MB_PER_WORKER)
        bound = min(bounds, key=bounds.get)
        workers, concurrency = max(1, bounds[bound]), GPU_CONCURRENCY
        why = f"on {device}: a worker a core, bounded by {bound}"
    if settings.rate_limit and not settings.workers:
        workers, why = 1, "one worker: RATE_LIMIT_PER_MINUTE is counted in one process"
    workers = settings.workers or workers
    concurrency = settings.concurrency or concurrency
    return Plan(workers, concurrency, why if not (settings.workers and settings.concurrency) else "as set")
