"""The Docker image as operators get it: Dockerfile.isnet-tiny built (podman, the base image stood
in by Debian's, tests/image_build.py), then run as its config says in a 512 MB memory cgroup with a
read-only root. The slowest test: on a fresh 2-CPU machine the base takes about 1 min (debootstrap)
and the image about 2 min (pip, npm and the model builds); podman's layer cache makes a re-run
take seconds. Needs root; skipped without (failed with REQUIRE_IMAGE, as .ci/run sets)."""
from __future__ import annotations

import io
import os
import subprocess

import numpy as np
import psutil
import pytest
from PIL import Image

from service.model.catalog import CATALOG
from service.model.engines import choose
from tools.cgroup import CgroupUnavailable, MemoryCgroup

from .image_build import Image as BuiltImage
from .image_build import ImageUnavailable, base_size, build, ensure_base_image, ensure_tools
from .support import ROOT, free_port, start_server

TAG = "localhost/bg-removal:test"
LIMIT_MB = 512

pytestmark = pytest.mark.image


def unavailable(reason: str):
    if os.environ.get("REQUIRE_IMAGE"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def image():
    try:
        ensure_tools()
        ensure_base_image()
        seconds = build(ROOT, "Dockerfile.isnet-tiny", TAG)
        built = BuiltImage.mount(TAG)
    except ImageUnavailable as exc:
        unavailable(str(exc))
    print(f"\nimage built in {seconds:.0f} s, {built.size / 2**20:.0f} MB")
    yield built
    built.unmount()


@pytest.fixture
def cgroup():
    try:
        group = MemoryCgroup(LIMIT_MB)
    except CgroupUnavailable as exc:
        unavailable(str(exc))
    yield group
    group.remove()


def alpha(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    with Image.open(io.BytesIO(response.content)) as answer:
        return np.asarray(answer.getchannel("A"), dtype=np.int16)


def test_the_runtime_image_is_slim(image):
    site = next((image.root / "venv/lib").glob("python3*/site-packages"))
    assert (site / "onnxruntime").is_dir() and (site / "openvino").is_dir()
    assert not (site / "onnx").exists()  # the build tools stayed in the build stage
    for tool in ("npm", "node", "gcc", "cc", "g++"):
        assert not (image.root / "usr/bin" / tool).exists(), tool
    # the build the default is served with on every CPU class and engine, whichever CPU runs the image
    for classes in (("AVX2",), ("AVX2", "AVX-VNNI"), ("AVX2", "AVX512", "AVX512-VNNI"),
                    ("AVX2", "AVX512", "AVX512-VNNI", "AVX512_BF16", "AMX-INT8", "AMX-BF16")):
        for engine in ("auto", "onnxruntime"):
            choice = choose(CATALOG["isnet-general-tiny"], engine, classes=classes, openvino=True, gpu=False)
            build = CATALOG[choice.build]
            assert (image.root / "models" / build.filename).is_file(), (classes, engine, build.name)
    ours = image.size - base_size()  # the stand-in base is Debian's, larger than python:3.11-slim
    assert ours < 700 * 2**20, f"{ours / 2**20:.0f} MB over the base"
    print(f"\nimage {image.size / 2**20:.0f} MB, of which {ours / 2**20:.0f} MB over the base")


def test_the_image_serves_as_its_config_says_inside_512_mb(image, cgroup, base_env, default_server, sample_photo,
                                                           tmp_path):
    env = image.env
    assert env["BG_REMOVAL_MODEL"] == "isnet-general-tiny" and image.config["User"] == "app"
    port = free_port()
    served = {"PORT": str(port), "HOST": "127.0.0.1"}  # as `docker run -e PORT=…` would
    server = start_server({}, tmp_path / "image.log", timeout=180, preexec_fn=cgroup.enter,
                          command=image.command(image.config["Cmd"], served), port=port)
    try:
        worker, = psutil.Process(server.process.pid).children()
        uid, gid = image.user_ids()
        assert worker.uids().real == uid != 0 and worker.gids().real == gid
        photo = {"file": ("astronaut.jpg", sample_photo.read_bytes())}
        inside, outside = server.post("/api/bg/remove", files=photo), default_server.post("/api/bg/remove", files=photo)
        assert inside.headers["X-Model-Used"] == outside.headers["X-Model-Used"]
        difference = np.abs(alpha(inside) - alpha(outside))
        assert difference.max() <= 2, difference.max()  # the same model, engine and wheels
        health = image.healthcheck["Test"]
        assert health[0] == "CMD"
        checked = subprocess.run(image.command(health[1:], served), capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stderr
        assert cgroup.oom_kills() == 0
        log = (tmp_path / "image.log").read_text()
        assert "read-only" in log  # the root is read-only: OpenVINO's cache can't be written there
        print(f"\nin the image: cgroup peak {cgroup.peak_mb():.0f} MB of {LIMIT_MB}; "
              f"{inside.headers['X-Model-Used']}; {inside.headers['X-Processing-Time-Ms']} ms")
    finally:
        server.stop()
