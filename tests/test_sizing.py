"""BG_REMOVAL_WORKERS, BG_REMOVAL_CONCURRENCY and BG_REMOVAL_THREADS: what auto picks on the CPU
and on a GPU, what is refused, and a real server with two workers and two images at once each."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from service.config import ConfigError, Settings
from service.model.cpu import auto_threads, usable_cores
from service.model.sizing import GPU_CONCURRENCY, GPU_MAX_WORKERS, Plan, gpu_memory_mb, plan

from .support import start_server


def test_on_the_cpu_auto_runs_one_worker_one_image_at_a_time():
    assert plan(Settings(), "cpu", cores=16).counts == (1, 1)


def test_auto_threads_are_the_cores_shared_among_the_workers_on_the_cpu_and_one_on_a_gpu():
    assert auto_threads("cpu", cores=16) == 16 and auto_threads("cpu", 0, cores=2) == 2
    assert auto_threads("cpu", 2, cores=16) == 8 and auto_threads("cpu", 3, cores=2) == 1
    assert auto_threads("cuda", cores=16) == 1 and auto_threads("tensorrt", 4, cores=16) == 1
    assert auto_threads("cpu") == usable_cores() >= 1
    assert Settings.from_env({}).threads == 0 and Settings.from_env({"BG_REMOVAL_THREADS": "auto"}).threads == 0


def test_on_a_gpu_auto_runs_a_worker_a_core_each_with_images_overlapping():
    h200 = plan(Settings(), "cuda", cores=16, host_mb=128 * 1024, gpu_mb=143771)
    assert h200 == Plan(16, GPU_CONCURRENCY, "on cuda: a worker a core, bounded by 16 cores")
    assert plan(Settings(), "cuda", cores=4, host_mb=16 * 1024).counts == (4, GPU_CONCURRENCY)
    assert plan(Settings(), "tensorrt", cores=1, host_mb=16 * 1024).counts == (1, GPU_CONCURRENCY)
    assert plan(Settings(), "cuda", cores=64, host_mb=512 * 1024).workers == GPU_MAX_WORKERS


def test_on_a_gpu_the_hosts_and_the_cards_memory_bound_the_workers():
    small_card = plan(Settings(), "cuda", cores=16, host_mb=128 * 1024, gpu_mb=24 * 1024)
    assert small_card.counts == (9, GPU_CONCURRENCY) and "the card's 24 GB" in small_card.reason
    small_host = plan(Settings(), "cuda", cores=16, host_mb=6 * 1024, gpu_mb=80 * 1024)
    assert small_host.counts == (4, GPU_CONCURRENCY) and "6 GB of memory" in small_host.reason
    assert plan(Settings(), "cuda", cores=16, host_mb=1024).workers == 1  # never none


def test_the_cards_memory_is_read_from_nvidia_smis_words():
    assert gpu_memory_mb({"name": "NVIDIA H200", "memory": "143771 MiB"}) == 143771
    assert gpu_memory_mb(None) is None and gpu_memory_mb({"memory": "[N/A]"}) is None


def test_set_counts_are_kept():
    settings = Settings.from_env({"BG_REMOVAL_WORKERS": "3", "BG_REMOVAL_CONCURRENCY": "4"})
    assert plan(settings, "cpu", cores=2) == Plan(3, 4, "as set")
    assert plan(Settings.from_env({"BG_REMOVAL_WORKERS": "auto"}), "cpu", cores=2).counts == (1, 1)


def test_a_rate_limit_keeps_one_worker_and_refuses_more():
    keyed = {"API_KEY": "k", "RATE_LIMIT_PER_MINUTE": "10"}
    assert plan(Settings.from_env(keyed), "cuda", cores=16, host_mb=64 * 1024).workers == 1
    with pytest.raises(ConfigError, match="BG_REMOVAL_WORKERS above 1 with RATE_LIMIT_PER_MINUTE"):
        plan(Settings.from_env({**keyed, "BG_REMOVAL_WORKERS": "2"}), "cuda", cores=16)


@pytest.mark.parametrize("value", ["0", "-1", "65", "many"])
def test_a_bad_count_is_refused_at_start(value):
    with pytest.raises(ConfigError, match="BG_REMOVAL_WORKERS"):
        Settings.from_env({"BG_REMOVAL_WORKERS": value})


def test_two_workers_serve_side_by_side(base_env, tmp_path, sample_photo):
    env = {**base_env, "BG_REMOVAL_MODEL": "u2netp", "BG_REMOVAL_WORKERS": "2", "BG_REMOVAL_CONCURRENCY": "2"}
    env.pop("BG_REMOVAL_THREADS", None)  # auto: the cores shared between the two
    server = start_server(env, tmp_path / "server.log")
    try:
        import requests

        pids = set()
        for _ in range(200):  # a new connection each time: either worker may take it
            with requests.Session() as fresh:
                status = fresh.get(server.url + "/api/bg/status", timeout=10).json()
            assert status["worker"]["workers"] == 2 and status["worker"]["concurrency"] == 2
            assert status["threads"] == max(1, usable_cores() // 2)
            pids.add(status["worker"]["pid"])
            if len(pids) == 2:
                break
        assert len(pids) == 2
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: server.post("/api/bg/remove",
                                                          files={"file": ("p.jpg", sample_photo.read_bytes())}),
                                    range(4)))
        assert [a.status_code for a in answers] == [200] * 4
    finally:
        assert server.stop() == 0
    assert "2 workers, 2 images at once each (as set)" in server.log.read_text()


def test_workers_that_would_not_fit_the_containers_memory_are_refused_at_start(base_env, tmp_path):
    from tools.cgroup import CgroupUnavailable, MemoryCgroup

    try:
        group = MemoryCgroup(400)
    except CgroupUnavailable as exc:
        pytest.skip(str(exc))
    try:
        with pytest.raises(RuntimeError, match="exited") as info:
            start_server({**base_env, "BG_REMOVAL_MODEL": "u2netp", "BG_REMOVAL_WORKERS": "2"}, tmp_path / "server.log",
                         preexec_fn=group.enter)
    finally:
        group.remove()
    assert "in each of 2 workers (BG_REMOVAL_WORKERS); this container's memory limit is 400 MB" in str(info.value)


def test_with_two_workers_a_scrape_counts_both(base_env, tmp_path, sample_photo):
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    temp = tmp_path / "temp"  # the server's own temp folder: other tests' servers make metrics folders too
    temp.mkdir()
    env = {**base_env, "BG_REMOVAL_MODEL": "u2netp", "BG_REMOVAL_WORKERS": "2", "TMPDIR": str(temp)}
    server = start_server(env, tmp_path / "server.log")
    try:
        pids, sent = set(), 0
        while len(pids) < 2:  # photos until both workers have answered some
            assert sent < 60, "one worker answered everything"
            with requests.Session() as fresh:
                response = fresh.post(server.url + "/api/bg/remove", files={"file": ("p.jpg", sample_photo.read_bytes())})
                assert response.status_code == 200
                pids.add(fresh.get(server.url + "/api/bg/status").json()["worker"]["pid"])
            sent += 1
        for _ in range(4):  # whichever worker answers the scrape, it counts every worker's photos
            with requests.Session() as fresh:
                text = fresh.get(server.url + "/metrics").text
            samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                       for family in text_string_to_metric_families(text) for s in family.samples}
            ok = ("bg_http_requests_total", (("method", "POST"), ("route", "/api/bg/remove"), ("status", "200")))
            assert samples[ok] == sent and samples[("bg_model_run_seconds_count", ())] == sent
            assert samples[("bg_admitted_requests_total", ())] == sent and samples[("bg_queue_requests", ())] == 0
            (info,) = [dict(labels) for name, labels in samples if name == "bg_model_info"]
            assert info["model"] == "u2netp" and info["device"] == "cpu"
            assert samples[("bg_process_peak_resident_memory_bytes", ())] > 50 * 2**20
            assert not any(name.startswith("process_") for name, _ in samples)  # one worker's alone: left out
        (made,) = temp.glob("bg-removal-metrics-*")
        assert any(made.iterdir())  # the workers' files
    finally:
        assert server.stop() == 0
    assert not any(temp.glob("bg-removal-metrics-*"))  # removed at exit
