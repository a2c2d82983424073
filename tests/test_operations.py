"""What an operator's machinery sees, over real HTTP: readiness, Prometheus metrics, a busy server
that still answers bad uploads for what they are, and a SIGTERM under load that loses nothing."""
from __future__ import annotations

import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tools.bench import synthetic_payloads

from .support import API_KEY, LiveServer, gradient, png_header_only, save, start_server


@pytest.fixture(scope="module")
def no_queue_server(base_env, tmp_path_factory):
    """u2netp with no room for waiting uploads: while one request is admitted, others are busy."""
    server = start_server({**base_env, "BG_REMOVAL_MODEL": "u2netp", "MAX_WAITING_MB": "0"},
                          tmp_path_factory.mktemp("no-queue") / "server.log")
    yield server
    server.stop()


@contextmanager
def upload_held_open(server: LiveServer):
    """A request to /api/bg/remove whose body stops halfway: admitted, it holds its place in the
    gate (the body is read after admission) until the block ends, and the server has let it go
    (it notices the closed connection in its own time: on a busy machine, after the block)."""
    address = urlsplit(server.url)
    body = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n\r\n" + b"\0" * 100
    with socket.create_connection((address.hostname, address.port), timeout=30) as held:
        held.sendall(b"POST /api/bg/remove HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 100000\r\n\r\n" + body)
        deadline = time.monotonic() + 30
        while server.get("/api/bg/status").json()["queue"]["admitted"] < 1:
            assert time.monotonic() < deadline, "the held upload was never admitted"
            time.sleep(0.02)
        yield
        held.shutdown(socket.SHUT_RDWR)
    deadline = time.monotonic() + 30
    while server.get("/api/bg/status").json()["queue"]["admitted"] > 0:
        assert time.monotonic() < deadline, "the held upload was never let go"
        time.sleep(0.02)


def metrics(server: LiveServer, **kw) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    response = server.get("/metrics", **kw)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def test_readiness_is_503_while_the_gate_is_full_and_200_when_it_is_not(no_queue_server):
    assert no_queue_server.get("/api/bg/ready").json()["status"] == "ready"
    with upload_held_open(no_queue_server):
        response = no_queue_server.get("/api/bg/ready")
        assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1
        assert response.json()["status"] == "busy" and "queue" in response.json()["reason"]
        assert no_queue_server.get("/api/bg/health").status_code == 200  # liveness is not readiness
    assert no_queue_server.get("/api/bg/ready").status_code == 200


def test_a_busy_server_answers_what_an_uploads_first_bytes_show_wrong_with_its_4xx(no_queue_server):
    photo = synthetic_payloads()[0][1]
    hostile = {"junk.jpg": (b"\x13\x37" * 100_000, 400, "not_an_image"),
               "bomb.png": (png_header_only(65000, 65000), 413, "image_too_large"),
               "page.pdf": (b"%PDF-1.4\n" + b"0" * 1000, 400, "not_an_image"),
               "cut.jpg": (photo[: len(photo) // 3], 503, "busy"),  # only decoding would show it cut
               "fine.png": (save(gradient(64, 48), "PNG"), 503, "busy")}
    with upload_held_open(no_queue_server):
        for name, (data, status, code) in hostile.items():
            response = no_queue_server.post("/api/bg/remove", files={"file": (name, data)})
            assert (response.status_code, response.json()["code"]) == (status, code), name
        response = no_queue_server.post("/v1.0/removebg", files={"image_file": ("junk.jpg", b"\x13\x37" * 1000)})
        assert response.status_code == 400 and "errors" in response.json()  # remove.bg's shape
    response = no_queue_server.post("/api/bg/remove", files={"file": ("cut.jpg", hostile["cut.jpg"][0])})
    assert response.status_code == 400  # idle, it is decoded and found cut


def test_an_upload_screened_as_busy_stays_refused_when_a_turn_comes_free_meanwhile(no_queue_server):
    # the screen reads the start of the body; a turn freed before it ends must not admit what is
    # left of it (the old race: 400 "no file" for a valid photo, seen on a busy machine)
    address, photo = urlsplit(no_queue_server.url), save(gradient(64, 48), "PNG")
    body = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.png\"\r\n\r\n" + photo
            + b"\r\n--b--\r\n")
    head = (b"POST /api/bg/remove HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: %d\r\n\r\n" % len(body))
    answers = []
    while "503" not in answers:  # until the server screened it while the held upload was admitted
        assert len(answers) < 5, answers
        with socket.create_connection((address.hostname, address.port), timeout=30) as late:
            with upload_held_open(no_queue_server):
                late.sendall(head + body[:100])
                time.sleep(0.5)  # time to reach the screen, which waits for the rest
            late.sendall(body[100:])
            answer = late.makefile("rb").read().decode("latin-1")
        answers.append(answer.split(" ", 2)[1])
        assert answers[-1] in ("503", "200"), answer  # never the 400 of a body read twice


def test_metrics_count_requests_model_runs_and_refusals_in_prometheus_format(no_queue_server):
    before = metrics(no_queue_server)
    ok = no_queue_server.post("/api/bg/remove", files={"file": ("p.png", save(gradient(96, 64), "PNG"))})
    assert ok.status_code == 200
    assert no_queue_server.get("/no/such/page").status_code == 404
    with upload_held_open(no_queue_server):
        assert no_queue_server.post("/api/bg/remove", files={"file": ("p.png", b"x" * 10)}).status_code == 400
        busy = no_queue_server.post("/api/bg/remove", files={"file": ("p.png", save(gradient(8, 8), "PNG"))})
        assert busy.status_code == 503
        during = metrics(no_queue_server)
    after = metrics(no_queue_server)

    def grew(sample, by=1.0, at=after):
        return at.get(sample, 0.0) - before.get(sample, 0.0) == by

    remove_ok = ("bg_http_requests_total", (("method", "POST"), ("route", "/api/bg/remove"), ("status", "200")))
    assert grew(remove_ok)
    assert grew(("bg_http_requests_total", (("method", "GET"), ("route", "unmatched"), ("status", "404"))))
    assert grew(("bg_model_run_seconds_count", ()))
    assert after[("bg_model_run_seconds_sum", ())] > before[("bg_model_run_seconds_sum", ())]
    assert grew(("bg_rejected_requests_total", (("reason", "queue_full"),)), by=1.0)  # the valid image only
    assert during[("bg_queue_requests", ())] == 1 and after[("bg_queue_requests", ())] == 0
    assert after[("bg_admitted_requests_total", ())] > before[("bg_admitted_requests_total", ())]
    assert after[("bg_queue_wait_seconds_count", ())] > before.get(("bg_queue_wait_seconds_count", ()), 0)
    assert after[("process_resident_memory_bytes", ())] > 50 * 2**20
    assert after[("bg_process_peak_resident_memory_bytes", ())] >= after[("process_resident_memory_bytes", ())] * 0.5
    status = no_queue_server.get("/api/bg/status").json()
    (info,) = [dict(labels) for name, labels in after if name == "bg_model_info"]
    assert info["model"] == status["model"] == "u2netp" and info["engine"] == status["engine"]["name"]
    assert info["precision"] == status["engine"]["precision"] and info["device"] == status["device"]["used"]
    assert not any(name.endswith("_created") for name, _ in after)


def test_metrics_can_be_kept_behind_the_api_key(keyed_server):
    refused = keyed_server.get("/metrics")
    assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
    assert keyed_server.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    metrics(keyed_server, headers={"Authorization": f"Bearer {API_KEY}"})  # as Prometheus' scrape config sends it
    metrics(keyed_server, headers={"X-API-Key": API_KEY})


def test_sigterm_under_load_finishes_every_admitted_request_and_readiness_says_draining(base_env, tmp_path):
    server = start_server({**base_env, "BG_REMOVAL_MODEL": "u2netp", "SHUTDOWN_DELAY_S": "5"}, tmp_path / "server.log")
    photo = synthetic_payloads()[0]  # 4000×3000: long enough that several wait behind each other
    try:
        with ThreadPoolExecutor(6) as pool:
            posts = [pool.submit(server.post, "/api/bg/remove", files={"file": photo}) for _ in range(6)]
            deadline = time.monotonic() + 60
            while server.get("/api/bg/status").json()["queue"]["admitted"] < 6:
                assert time.monotonic() < deadline, "the requests were never all admitted"
                time.sleep(0.01)
            server.process.send_signal(signal.SIGTERM)  # the master passes it on to the worker
            deadline = time.monotonic() + 4
            while (draining := server.get("/api/bg/ready")).json()["status"] != "draining" \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            statuses = [p.result().status_code for p in posts]
        assert draining.status_code == 503 and draining.json()["status"] == "draining"
        assert statuses == [200] * 6
        assert server.process.wait(timeout=60) == 0
        with pytest.raises(requests.ConnectionError):
            server.get("/api/bg/health")
    finally:
        server.stop()
