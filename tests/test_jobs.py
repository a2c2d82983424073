"""Asynchronous jobs with the real parts: Debian's redis-server, real worker processes
(``python -m service worker``), the server over HTTP, a webhook receiver on loopback, a worker
killed mid-job, and Redis restarted between submit and finish."""
from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import signal
import time
import zipfile

import numpy as np
import pytest
import redis as redis_client
from PIL import Image

from tools.bench import synthetic_payloads

from .test_openapi import fits
from .support import ImageHost, RedisServer, gradient, save, start_server, start_worker

SECRET = "webhook-test-secret"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
    except FileNotFoundError as exc:
        if os.environ.get("REQUIRE_REDIS"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    yield server
    server.stop()


def jobs_env(base_env, redis_url: str, **extra) -> dict[str, str]:
    return {**base_env, "BG_REMOVAL_MODEL": "u2netp", "REDIS_URL": redis_url, "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8", **extra}


@pytest.fixture(scope="module")
def jobs(base_env, redis_server, tmp_path_factory):
    """A server and one worker on Redis database 0."""
    folder = tmp_path_factory.mktemp("jobs")
    env = jobs_env(base_env, redis_server.url + "/0")
    worker = start_worker(env, folder / "worker.log")
    server = start_server(env, folder / "server.log")
    yield server
    server.stop()
    worker.terminate()
    worker.wait(timeout=60)


@pytest.fixture
def receiver():
    host = ImageHost()
    yield host
    host.close()


def wait_for(server, status_url: str, timeout: float = 120, until=("finished", "failed")) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = server.get(status_url).json()
        if state["state"] in until:
            return state
        time.sleep(0.1)
    raise AssertionError(f"job not {until} after {timeout} s: {state}")


def store_keys(url: str) -> tuple[int, list[bytes]]:
    connection = redis_client.Redis.from_url(url)
    return int(connection.get("bg:store:bytes") or 0), sorted(connection.keys("bg:job:*"))


def alpha(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.getchannel("A"))


def test_a_job_is_accepted_at_once_run_by_a_worker_and_its_webhook_is_signed(jobs, receiver, sample_photo):
    photo = sample_photo.read_bytes()
    files = [("file", ("astronaut.jpg", photo)), ("file", ("broken.jpg", b"\xff\xd8junk")),
             ("file", ("set.zip", _zip({"shop/tile.png": save(gradient(90, 60), "PNG")})))]
    response = jobs.post("/api/bg/jobs", files=files, data={"webhook_url": receiver.url + "/hook"})
    assert response.status_code == 202, response.text
    submitted = response.json()
    assert submitted["state"] == "queued" and submitted["images"] == 3
    assert response.headers["Location"] == submitted["status_url"] == f"/api/bg/jobs/{submitted['id']}"
    state = wait_for(jobs, submitted["status_url"])
    assert state["state"] == "finished" and (state["done"], state["succeeded"], state["progress"]) == (3, 2, 1.0)
    assert [f["status"] for f in state["files"]] == [200, 400, 200]
    assert state["files"][1]["code"] == "not_an_image"
    result = jobs.get(state["files"][0]["url"])
    assert result.status_code == 200 and result.headers["Content-Type"] == "image/png"
    single = jobs.post("/api/bg/remove", files={"file": ("astronaut.jpg", photo)})
    assert np.array_equal(alpha(result.content), alpha(single.content))  # the same pipeline and model
    assert jobs.get(state["files"][2]["url"]).headers["Content-Disposition"].endswith('"nobg_tile.png"')

    deadline = time.monotonic() + 30
    while not receiver.posts and time.monotonic() < deadline:
        time.sleep(0.05)
    (path, headers, body), = receiver.posts
    assert path == "/hook" and json.loads(body)["id"] == submitted["id"] and json.loads(body)["succeeded"] == 2
    expected = hmac.new(SECRET.encode(), headers["X-Webhook-Timestamp"].encode() + b"." + body, hashlib.sha256)
    assert headers["X-Webhook-Signature"] == "sha256=" + expected.hexdigest()
    assert abs(int(headers["X-Webhook-Timestamp"]) - time.time()) < 60
    assert wait_for(jobs, submitted["status_url"])["webhook_status"] == "delivered (200) on attempt 1"
    spec = jobs.get("/api/bg/openapi.json").json()
    fits(spec, "/api/bg/jobs", "post", "202", submitted)
    fits(spec, "/api/bg/jobs/{job_id}", "get", "200", jobs.get(submitted["status_url"]).json())


def test_a_webhook_that_fails_is_retried(jobs, receiver):
    receiver.post_statuses = [500]
    response = jobs.post("/api/bg/jobs", files=[("file", ("p.png", save(gradient(40, 30), "PNG")))],
                         data={"webhook_url": receiver.url + "/flaky"})
    status_url = response.json()["status_url"]
    wait_for(jobs, status_url)
    deadline = time.monotonic() + 30
    while "webhook_status" not in jobs.get(status_url).json() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert jobs.get(status_url).json()["webhook_status"] == "delivered (200) on attempt 2"
    assert [p[0] for p in receiver.posts] == ["/flaky", "/flaky"]


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize("case", ["unknown id", "malformed id", "truncated zip", "zip bomb", "private webhook",
                                  "metadata webhook", "no files"])
def test_bad_input_on_the_job_paths_gets_a_clear_4xx_and_leaves_nothing_behind(jobs, redis_server, case):
    before = store_keys(redis_server.url + "/0")
    good = save(gradient(32, 32), "PNG")
    if case in ("unknown id", "malformed id"):
        job_id = "0" * 32 if case == "unknown id" else "not-a-job;DROP"
        response, status, code = jobs.get(f"/api/bg/jobs/{job_id}"), 404, "job_not_found"
    else:
        files, data = [("file", ("a.png", good))], {}
        if case == "truncated zip":
            archive = _zip({"a.png": good, "b.png": good})
            files, status, code = [("file", ("cut.zip", archive[:-30]))], 400, "bad_zip"
        elif case == "zip bomb":
            files, status, code = [("file", ("bomb.zip", _zip({"x.png": b"\0" * (100 * 2**20)})))], 413, \
                "file_too_large"
        elif case == "private webhook":
            data, status, code = {"webhook_url": "http://10.1.2.3/hook"}, 400, "invalid_webhook_url"
        elif case == "metadata webhook":
            data, status, code = {"webhook_url": "http://169.254.169.254/latest"}, 400, "invalid_webhook_url"
        else:
            files, status, code = [("image", ("a.png", good))], 400, "missing_file"
        response = jobs.post("/api/bg/jobs", files=files, data=data)
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert store_keys(redis_server.url + "/0") == before


def test_results_of_failed_images_and_jobs_off_are_404(jobs, u2netp_server):
    response = jobs.post("/api/bg/jobs", files=[("file", ("bad.png", b"nope"))])
    state = wait_for(jobs, response.json()["status_url"])
    missing = jobs.get(f"{response.json()['status_url']}/results/0")
    assert state["files"][0]["status"] == 400 and missing.status_code == 404
    assert jobs.get(f"{response.json()['status_url']}/results/7").json()["code"] == "job_not_found"
    off = u2netp_server.post("/api/bg/jobs", files=[("file", ("a.png", save(gradient(8, 8), "PNG")))])
    assert off.status_code == 404 and off.json()["code"] == "jobs_disabled"


def test_a_server_without_redis_url_never_imports_redis(base_env):
    """The job paths load redis at their first use (8 MB in every worker otherwise)."""
    import subprocess
    import sys

    from .support import ROOT

    code = ("import sys; import service.http.api, service.http.removebg, service.http.batch, service.jobs.api; "
            "print('redis' in sys.modules, 'rq' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=base_env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_a_full_queue_and_a_missing_redis_answer_503_with_retry_after(base_env, redis_server, tmp_path):
    env = jobs_env(base_env, redis_server.url + "/3", MAX_QUEUED_JOBS="1")  # no worker on database 3
    server = start_server(env, tmp_path / "server.log")
    try:
        photo = [("file", ("a.png", save(gradient(16, 16), "PNG")))]
        assert server.post("/api/bg/jobs", files=photo).status_code == 202
        full = server.post("/api/bg/jobs", files=photo)
        assert full.status_code == 503 and full.json()["code"] == "busy" and int(full.headers["Retry-After"]) > 0
    finally:
        server.stop()
        redis_client.Redis.from_url(redis_server.url + "/3").flushdb()
    server = start_server(jobs_env(base_env, "redis://127.0.0.1:1/0"), tmp_path / "no-redis.log")
    try:
        response = server.post("/api/bg/jobs", files=photo)
        assert response.status_code == 503 and "Retry-After" in response.headers, response.text
    finally:
        server.stop()


def test_a_worker_killed_mid_job_leaves_the_job_to_another_which_finishes_it_once(base_env, redis_server, tmp_path):
    env = jobs_env(base_env, redis_server.url + "/1")
    first = start_worker(env, tmp_path / "first.log")
    server = start_server(env, tmp_path / "server.log")
    second = None
    try:
        big = synthetic_payloads()[0]  # 4000×3000: each image takes a while
        response = server.post("/api/bg/jobs", files=[("file", big)] * 6)
        status_url = response.json()["status_url"]
        wait_for(server, status_url, until=("started",))
        deadline = time.monotonic() + 60
        while server.get(status_url).json()["done"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)  # mid-job: some images recorded, the rest not
        first.wait(timeout=30)
        done_when_killed = server.get(status_url).json()["done"]
        assert done_when_killed < 6
        second = start_worker(env, tmp_path / "second.log")
        state = wait_for(server, status_url, timeout=180)
        assert state["state"] == "finished" and state["succeeded"] == 6 and state["attempts"] == 2
        connection = redis_client.Redis.from_url(redis_server.url + "/1")
        assert connection.hlen(f"bg:job:{state['id']}:entries") == 6  # each image recorded once
        assert "job" in (tmp_path / "second.log").read_text()
    finally:
        server.stop()
        for worker in (first, second):
            if worker and worker.poll() is None:
                worker.terminate()
                worker.wait(timeout=60)


def test_redis_restarted_between_submit_and_finish_loses_no_acknowledged_job(base_env, tmp_path):
    try:
        redis = RedisServer(tmp_path)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    env = jobs_env(base_env, redis.url + "/0")
    server = start_server(env, tmp_path / "server.log")
    worker = None
    try:
        response = server.post("/api/bg/jobs", files=[("file", ("a.png", save(gradient(64, 48), "PNG")))])
        assert response.status_code == 202
        redis.stop()  # acknowledged, not yet run: no worker is up
        down = server.get(response.json()["status_url"])  # mid-request, on the connection made at submit
        assert down.status_code == 503 and down.json()["code"] == "busy" and down.headers["Retry-After"] == "10"
        redis.start()  # the same data folder: its append-only file
        worker = start_worker(env, tmp_path / "worker.log")
        state = wait_for(server, response.json()["status_url"])
        assert state["state"] == "finished" and state["succeeded"] == 1
    finally:
        server.stop()
        if worker:
            worker.terminate()
            worker.wait(timeout=60)
        redis.stop()


def test_the_cli_sends_a_folder_as_jobs_and_resumes_with_skip_existing(jobs, run_cli, photos, tmp_path):
    folder, out = tmp_path / "photos", tmp_path / "out"
    folder.mkdir()
    for name, path in list(photos.items())[:3]:
        with Image.open(path) as photo:
            photo.convert("RGB").save(folder / f"{name}.jpg", "JPEG", quality=90)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a photo")
    first = run_cli("remove", folder, "--out-dir", out, "--server", jobs.url, "--jobs", "--quiet")
    assert first.returncode == 1 and "broken.jpg" in first.stderr, first.stderr  # the rest are written
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 3 and all(name.endswith(".png") for name in written)
    with Image.open(out / written[0]) as cut:
        assert cut.mode == "RGBA"
    kept = out / written[1]
    before = kept.stat().st_mtime_ns
    (out / written[0]).unlink()
    (folder / "broken.jpg").unlink()
    again = run_cli("remove", folder, "--out-dir", out, "--server", jobs.url, "--jobs", "--skip-existing", "--quiet")
    assert again.returncode == 0, again.stderr
    assert "1 of 1 written" in again.stdout and sorted(p.name for p in out.iterdir()) == written
    assert kept.stat().st_mtime_ns == before  # left as it was


def test_the_readmes_job_examples_work(jobs, sample_photo, tmp_path):
    import shutil
    import subprocess

    from .test_readme import JOB_CURL_LINES

    assert len(JOB_CURL_LINES) == 3
    shutil.copy(sample_photo, tmp_path / "photo.jpg")
    with zipfile.ZipFile(tmp_path / "more-photos.zip", "w") as archive:
        archive.write(sample_photo, "astronaut.jpg")
    job_id = None
    for line in JOB_CURL_LINES:
        command = line.replace("http://localhost:5000", jobs.url).replace("curl ", "curl --fail -sS ", 1)
        if job_id:
            command = command.replace("/ID", f"/{job_id}")
        result = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, timeout=120)
        assert result.returncode == 0, result.stderr.decode()
        if job_id is None:
            job_id = json.loads(result.stdout)["id"]
            wait_for(jobs, f"/api/bg/jobs/{job_id}")
    with Image.open(tmp_path / "first.png") as first:
        assert first.mode == "RGBA"
