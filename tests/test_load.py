"""Bursts and shutdown against a real server process on loopback (bounded in count and time)."""
from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import psutil

from .support import gradient, save, start_server


def tree_rss_mb(pid: int) -> float:
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


def test_burst_above_the_admission_limit_gets_only_200_or_503_and_no_growth(base_env, tmp_path):
    server = start_server({**base_env, "BG_REMOVAL_MODEL": "u2netp", "MAX_WAITING_MB": "0"}, tmp_path / "server.log")
    try:
        payload = {"file": ("g.png", save(gradient(800, 600), "PNG"))}
        for _ in range(10):  # warm up: first requests settle the allocator
            assert server.post("/api/bg/remove", files=payload).status_code == 200
        before = tree_rss_mb(server.process.pid)
        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(lambda _: server.post("/api/bg/remove", files=payload), range(40)))
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 503}, statuses
        assert 200 in statuses and 503 in statuses
        for busy in (r for r in responses if r.status_code == 503):
            assert int(busy.headers["Retry-After"]) > 0
            assert busy.headers["Content-Type"] == "application/json"
            assert busy.json()["code"] == "busy" and busy.json()["error"]
        after = tree_rss_mb(server.process.pid)
        assert after <= before * 1.05, f"RSS grew from {before:.0f} to {after:.0f} MB"
        assert server.get("/api/bg/health").status_code == 200
    finally:
        assert server.stop() == 0


def test_sigterm_lets_the_running_request_finish_then_exits_cleanly(base_env, tmp_path, sample_photo):
    # isnet-general-tiny: seconds per image, a wide window to signal during a request
    server = start_server(dict(base_env), tmp_path / "server.log")
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(server.post, "/api/bg/remove",
                                  files={"file": ("p.jpg", sample_photo.read_bytes())})
            deadline = time.monotonic() + 30
            while server.get("/api/bg/status").json()["queue"]["admitted"] == 0:
                assert time.monotonic() < deadline and not pending.done()
                time.sleep(0.05)
            server.process.send_signal(signal.SIGTERM)
            response = pending.result(timeout=120)
        assert response.status_code == 200 and response.headers["Content-Type"] == "image/png"
        assert server.process.wait(timeout=60) == 0
    finally:
        server.stop()


def test_a_burst_of_large_photos_is_served_not_turned_away(u2netp_server):
    # a user's batch script: 24 photos of 4000×3000 (a few MB each), 12 at a time
    from tools.bench import synthetic_payloads

    name, photo = synthetic_payloads()[0]
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda _: u2netp_server.post("/api/bg/remove", files={"file": (name, photo)}),
                                  range(24)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 20, statuses
    assert u2netp_server.get("/api/bg/status").json()["queue"]["waiting_mb"] == 0
