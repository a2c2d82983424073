"""``bench --jobs-workers N [N ...]``: photos a minute through the job queue with N workers, against
the server alone (the same photos sent one at a time to /api/bg/remove), on one machine.

Starts Debian's redis-server on a free loopback port, the server with REDIS_URL, then for each
count N workers (``python -m service worker``, BG_REMOVAL_THREADS each), submits the photos as jobs
of JOB_IMAGES and times the first submit to the last job's end. Prints one table: photos a
minute, each worker's peak RSS, the server's.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from .bench import ROOT, TreeSampler, _free_port, _table, cpu_description, load_payloads

JOB_IMAGES = 10


def _wait_http(url: str, process: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited at start")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} was not up after {timeout} s")


def _start_worker(env: dict, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "service", "worker"], cwd=ROOT, env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while "Listening on" not in log.read_text():
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"a worker did not start; see {log}")
        time.sleep(0.1)
    return worker


def jobs_throughput(model: str, photos: Path | None, images: int, worker_counts: list[int], threads: int) -> int:
    redis_server = shutil.which("redis-server")
    if not redis_server:
        print("error: bench --jobs-workers needs redis-server (apt-get install redis-server)", file=sys.stderr)
        return 1
    payloads = load_payloads(photos)
    uploads = [payloads[i % len(payloads)] for i in range(images)]
    folder = Path(tempfile.mkdtemp(prefix="bg-jobs-bench-"))
    redis_port, port = _free_port(), _free_port()
    redis = subprocess.Popen([redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(folder),
                              "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    env = dict(os.environ, BG_REMOVAL_MODEL=model, BG_REMOVAL_THREADS=str(threads), PORT=str(port),
               HOST="127.0.0.1", REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", MAX_QUEUED_JOBS="1000")
    url = f"http://127.0.0.1:{port}"
    with open(folder / "server.log", "wb") as out:
        server = subprocess.Popen([sys.executable, "app_isnet_tiny.py"], cwd=ROOT, env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    rows = []
    try:
        _wait_http(url + "/api/bg/health", server, "the server")
        server_sampler = TreeSampler(server.pid)
        server_sampler.start()
        started = time.perf_counter()
        for name, data in uploads:  # the server alone, one photo at a time
            requests.post(url + "/api/bg/remove", files={"file": (name, data)}, timeout=600).raise_for_status()
        alone = time.perf_counter() - started
        model_used = requests.get(url + "/api/bg/status", timeout=5).json()["model_used"]
        rows.append(("server alone, one photo at a time", f"{images / alone * 60:.0f}", "–",
                     f"{server_sampler.peak:.0f}"))
        for count in worker_counts:
            workers = [_start_worker(env, folder / f"worker-{count}-{n}.log") for n in range(count)]
            samplers = [TreeSampler(w.pid) for w in workers]
            for sampler in samplers:
                sampler.start()
            try:
                started = time.perf_counter()
                status_urls = []
                for first in range(0, images, JOB_IMAGES):
                    files = [("file", upload) for upload in uploads[first:first + JOB_IMAGES]]
                    answer = requests.post(url + "/api/bg/jobs", files=files, timeout=120)
                    answer.raise_for_status()
                    status_urls.append(url + answer.json()["status_url"])
                for status_url in status_urls:  # polled twice a second, as a client would
                    while requests.get(status_url, timeout=10).json()["state"] not in ("finished", "failed"):
                        time.sleep(0.5)
                took = time.perf_counter() - started
            finally:
                for sampler in samplers:
                    sampler.stop()
                for worker in workers:
                    worker.terminate()
                for worker in workers:
                    worker.wait(60)
            rows.append((f"jobs, {count} worker{'s' if count > 1 else ''}", f"{images / took * 60:.0f}",
                         " / ".join(f"{s.peak:.0f}" for s in samplers), f"{server_sampler.peak:.0f}"))
        server_sampler.stop()
    finally:
        server.terminate()
        server.wait(60)
        redis.terminate()
        redis.wait(30)
        shutil.rmtree(folder, ignore_errors=True)
    print(f"CPU: {cpu_description()}")
    print(f"{model_used}, {images} photos, {threads} thread{'s' if threads > 1 else ''} per process, "
          f"jobs of {JOB_IMAGES}")
    _table(("how", "photos a minute", "worker peak RSS MB", "server peak RSS MB"), rows)
    return 0
