"""Faults on a real server: a failing model run, the time limit, requests gunicorn can't parse."""
from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from .support import cap_address_space, gradient, save, start_server


def test_a_run_that_fails_for_memory_answers_503_once_and_the_next_request_works(base_env, tmp_path, sample_photo):
    """A real failure: the worker's address space is capped just above its size, so ONNX
    Runtime's allocations fail (std::bad_alloc) in the middle of the network. (OpenVINO allocates
    a run's buffers when it compiles and keeps them: its runs allocate nothing that could fail.)"""
    server = start_server({**base_env, "BG_REMOVAL_MODEL": "u2netp", "BG_REMOVAL_ENGINE": "onnxruntime"},
                          tmp_path / "server.log")
    try:
        upload = {"file": ("photo.jpg", sample_photo.read_bytes())}
        cap_address_space(server, 20)
        try:
            failed = server.post("/api/bg/remove", files=upload)
        finally:
            cap_address_space(server, None)
        assert failed.status_code == 503 and int(failed.headers["Retry-After"]) > 0
        assert failed.json() == {"error": "u2netp could not get the memory it needs for this run; retry shortly",
                                 "code": "out_of_memory"}
        assert "Traceback" not in failed.text
        assert server.post("/api/bg/remove", files=upload).status_code == 200
        assert server.get("/api/bg/status").json()["queue"]["admitted"] == 0
        assert "u2netp: out of memory" in server.log.read_text()
    finally:
        assert server.stop() == 0


@pytest.fixture(scope="module")
def hasty_server(base_env, tmp_path_factory):
    """isnet-general-tiny on ONNX Runtime (seconds per image) with a one-second time limit.
    (OpenVINO's bf16 run can end inside the second; its cancellation is tested below.)"""
    server = start_server({**base_env, "REQUEST_TIMEOUT_S": "1", "BG_REMOVAL_ENGINE": "onnxruntime"},
                          tmp_path_factory.mktemp("hasty") / "server.log")
    yield server
    server.stop()


def test_openvino_cancels_a_run_at_its_deadline_and_runs_the_next(model_dir):
    from service.model.catalog import CATALOG
    from service.config import Settings
    from service.model.engines import fetched_engine
    from service.errors import TimedOut

    settings = Settings(model_dir=model_dir, engine="openvino", device="cpu")
    engine = fetched_engine(CATALOG["isnet-general-tiny"], settings, show_progress=False)
    batch = np.zeros((1, 3, 1024, 1024), np.float32)
    started = time.monotonic()
    with pytest.raises(TimedOut):
        engine.run(batch, deadline=started + 0.05)  # a 1024² run takes far longer
    assert time.monotonic() - started < 2
    assert engine.run(batch).shape == (1, 1, 1024, 1024)


def test_the_time_limit_stops_a_model_run_and_the_waits_behind_it(hasty_server):
    payload = {"file": ("g.png", save(gradient(640, 480), "PNG"))}
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: hasty_server.post("/api/bg/remove", files=payload), range(2)))
    elapsed = time.monotonic() - started
    # One run is stopped mid-network, the other never gets its turn: both end near
    # the one-second limit, not after the several seconds a run takes.
    assert elapsed < 4, elapsed
    for answer in answers:
        assert answer.status_code == 503
        assert answer.json()["code"] == "timeout" and "time limit" in answer.json()["error"]
        assert int(answer.headers["Retry-After"]) > 0
    assert hasty_server.get("/api/bg/health").status_code == 200
    assert hasty_server.get("/api/bg/status").json()["queue"]["admitted"] == 0


def raw_exchange(url: str, request: bytes) -> tuple[str, dict, bytes]:
    """Send bytes as they are; return the status line, headers and body of the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    return status, {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}, body


@pytest.mark.parametrize("request_bytes, status", [
    (b"NOT A REQUEST\r\n\r\n", 400),
    (b"GET /api/bg/health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
], ids=["bad request line", "bad header", "long uri"])
def test_requests_gunicorn_cannot_parse_get_json_errors(u2netp_server, request_bytes, status):
    status_line, headers, body = raw_exchange(u2netp_server.url, request_bytes)
    assert status_line.split()[1] == str(status)
    assert headers["content-type"] == "application/json"
    assert headers["x-content-type-options"] == "nosniff"
    answer = json.loads(body)
    assert set(answer) == {"error", "code"} and answer["error"] and answer["code"]
    assert u2netp_server.get("/api/bg/health").status_code == 200
