"""``python -m tools bench --throughput``: photos a second through the real server at a given
number of clients, for each count of worker processes × images per worker × inference threads.

For each combination: start ``python app_isnet_tiny.py`` with BG_REMOVAL_WORKERS,
BG_REMOVAL_CONCURRENCY and BG_REMOVAL_THREADS set, wait until every worker answers, send a
warm-up round, time requests sent one at a time (the latency alone), then ``clients`` clients
send ``total`` requests as fast as they are answered, each over its own keep-alive connection.
The first line names the CPU, its classes and the GPU. Nothing here is asserted: it is a
measurement, to be quoted with the machine it ran on.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

from .bench import ROOT, TreeSampler, _free_port, _table, cpu_description

START_TIMEOUT = 300  # seconds for every worker to answer (CUDA's start, cuDNN's search, per worker)


class GpuSampler(threading.Thread):
    """nvidia-smi's utilisation and memory of the first GPU every 100 ms, while it runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.busy: list[float] = []
        self.memory: list[float] = []
        self._process = None

    def run(self) -> None:
        self._process = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                          "--format=csv,noheader,nounits", "-lms", "100"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for line in self._process.stdout:
            try:
                busy, memory = (float(v) for v in line.split(",")[:2])
            except ValueError:
                continue
            self.busy.append(busy)
            self.memory.append(memory)

    def stop(self) -> tuple[float, float]:
        """(mean utilisation %, peak memory MiB) over the run."""
        if self._process:
            self._process.terminate()
        self.join(5)
        return (statistics.fmean(self.busy) if self.busy else float("nan"),
                max(self.memory) if self.memory else float("nan"))


def gpu_name() -> str:
    from service.model.device import gpu_description

    gpu = gpu_description()
    return f"{gpu['name']} ({gpu['memory']})" if gpu else "no GPU"


def _wait_for_workers(url: str, process: subprocess.Popen, workers: int, log: Path) -> float:
    """Seconds until ``workers`` distinct worker processes have answered /api/bg/status."""
    started, seen = time.perf_counter(), set()
    while len(seen) < workers:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited at start; see {log}")
        if time.perf_counter() - started > START_TIMEOUT:
            raise RuntimeError(f"{len(seen)} of {workers} workers answered in {START_TIMEOUT} s; see {log}")
        try:
            with requests.Session() as fresh:  # a new connection: any worker may take it
                seen.add(fresh.get(url + "/api/bg/status", timeout=2).json()["worker"]["pid"])
        except (requests.RequestException, KeyError, ValueError):
            time.sleep(0.1)
    return time.perf_counter() - started


def measure(model: str, payloads, workers: int, concurrency: int, threads: int, clients: int, total: int,
            log: Path, extra_env: dict[str, str] | None = None) -> dict:
    """One server's figures at ``clients`` clients (see the module's docstring)."""
    port = _free_port()
    env = dict(os.environ, BG_REMOVAL_MODEL=model, PORT=str(port), HOST="127.0.0.1",
               BG_REMOVAL_WORKERS=str(workers), BG_REMOVAL_CONCURRENCY=str(concurrency),
               BG_REMOVAL_THREADS=str(threads), **(extra_env or {}))
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "app_isnet_tiny.py"], cwd=ROOT, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        start_s = _wait_for_workers(url, process, workers, log)
        local = threading.local()

        def send(i: int) -> tuple[int, float]:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            name, data = payloads[i % len(payloads)]
            t = time.perf_counter()
            try:
                status = local.session.post(url + "/api/bg/remove", files={"file": (name, data)},
                                            timeout=600).status_code
            except requests.ConnectionError:
                status = 0
            return status, time.perf_counter() - t

        with ThreadPoolExecutor(clients) as pool:  # warm-up: each worker's first runs
            list(pool.map(send, range(max(2 * clients, 2 * workers * concurrency))))
        alone = [send(i)[1] for i in range(len(payloads))]
        sampler = TreeSampler(process.pid)
        gpu = GpuSampler() if "no GPU" not in gpu_name() else None
        sampler.start()
        if gpu:
            gpu.start()
        began = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(send, range(total)))
        wall = time.perf_counter() - began
        sampler.stop()
        busy, gpu_memory = gpu.stop() if gpu else (float("nan"), float("nan"))
        label = requests.get(url + "/api/bg/status", timeout=5).json()["model_used"]
    finally:
        process.terminate()
        process.wait(60)
    ok = [seconds for status, seconds in results if status == 200]
    return {"label": label, "start_s": start_s, "ok": len(ok), "total": total, "rate": len(ok) / wall,
            "p50_alone_ms": statistics.median(alone) * 1000,
            "p50_ms": statistics.median(ok) * 1000 if ok else float("nan"),
            "p95_ms": float(np.percentile(ok, 95)) * 1000 if ok else float("nan"),
            "peak_tree": sampler.peak, "gpu_busy": busy, "gpu_memory": gpu_memory}


def main(models: list[str], photos: Path | None, workers: list[int], concurrencies: list[int],
         threads: list[int], clients: int, total: int, device: str = "auto") -> int:
    print(f"CPU: {cpu_description()}; {os.cpu_count()} CPUs; GPU: {gpu_name()}; BG_REMOVAL_DEVICE={device}",
          flush=True)
    payloads = [(p.name, p.read_bytes()) for p in sorted(photos.iterdir())
                if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")]
    print(f"{total} requests cycling {len(payloads)} images from {clients} clients, each on its own connection",
          flush=True)
    rows, failures = [], []
    for model in models:
        for w in workers:
            for c in concurrencies:
                for t in threads:
                    log = Path(f"/tmp/throughput-{model}-{w}x{c}x{t}.log")
                    try:
                        r = measure(model, payloads, w, c, t, clients, total, log, {"BG_REMOVAL_DEVICE": device})
                    except RuntimeError as exc:
                        failures.append(f"{model} {w}×{c}×{t}: {exc}")
                        print(f"  {failures[-1]}", flush=True)
                        continue
                    rows.append((r["label"], str(w), str(c), str(t), f"{r['ok']}/{r['total']}", f"{r['rate']:.1f}",
                                 f"{r['p50_alone_ms']:.0f}", f"{r['p50_ms']:.0f}", f"{r['p95_ms']:.0f}",
                                 f"{r['peak_tree']:.0f}", f"{r['gpu_busy']:.0f}", f"{r['gpu_memory']:.0f}",
                                 f"{r['start_s']:.1f}"))
                    print("  " + " | ".join(rows[-1]), flush=True)
    print()
    _table(("model", "workers", "images at once a worker", "threads", "ok/total", "photos/s",
            "p50 alone ms", "p50 loaded ms", "p95 loaded ms", "peak tree MB", "GPU busy %", "GPU MiB",
            "start s"), rows)
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if failures else 0
