"""The 512 MB ceiling as a host enforces it: the server, started as the Dockerfile starts it, in
a 512 MB memory cgroup, under a burst of large photos mixed with hostile inputs."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from tools.bench import synthetic_payloads
from tools.cgroup import CgroupUnavailable, MemoryCgroup

from .support import ROOT, many_frames_gif, png_header_only, save, start_server

LIMIT_MB = 512
NOBODY = 65534


def dockerfile_environment() -> dict[str, str]:
    """The ENV of the Dockerfile's runtime stage (but PATH, which names the image's venv)."""
    runtime = (ROOT / "Dockerfile.isnet-tiny").read_text().rsplit("FROM ", 1)[1]
    block = re.search(r"^ENV ((?:.*\\\n)*.*)$", runtime, re.M).group(1)
    return {k: v for k, v in re.findall(r"(\w+)=(\S+)", block) if k != "PATH"}


@pytest.fixture
def cgroup():
    try:
        group = MemoryCgroup(LIMIT_MB)
    except CgroupUnavailable as exc:
        pytest.skip(str(exc))
    yield group
    group.remove()


def drop_root() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def nobody_can_run_python(env: dict[str, str]) -> bool:
    """Whether this Python and the project can be run as an unprivileged user here (a Python
    under root's home, as pyenv puts it, cannot)."""
    if os.geteuid() != 0:
        return False
    try:
        return subprocess.run([sys.executable, "-c", "import service.http.wsgi"], cwd=ROOT, env=env, preexec_fn=drop_root,
                              capture_output=True, timeout=120).returncode == 0
    except PermissionError:
        return False


def contained_server(base_env, model_dir, cgroup, log):
    """The default server as the Dockerfile starts it, in ``cgroup``, as nobody where it can be."""
    env = {**{k: v for k, v in base_env.items() if not k.startswith(("MALLOC_", "GLIBC_"))},
           **dockerfile_environment(), "MODEL_DIR": str(model_dir)}
    assert env["BG_REMOVAL_MODEL"] == "isnet-general-tiny"
    unprivileged = nobody_can_run_python(env)  # as the image's non-root user, where the machine allows

    def contain():
        cgroup.enter()
        if unprivileged:
            drop_root()

    return start_server(env, log, preexec_fn=contain), unprivileged


def animation_at_the_pixel_limit(photo: bytes) -> bytes:
    """A GIF of 10 frames of 900×444, panning over ``photo``: MAX_ANIMATION_PIXELS (4 MP in all),
    which bounds what an animation holds, in a fifth of the model runs of 50 smaller frames."""
    with Image.open(io.BytesIO(photo)) as image:
        small = image.convert("RGB").resize((1000, 750))
    frames = [small.crop((10 * i, 8 * i, 10 * i + 900, 8 * i + 444)) for i in range(10)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    return buffer.getvalue()


def test_the_server_holds_a_burst_and_hostile_inputs_inside_512_mb(base_env, model_dir, cgroup, tmp_path):
    server, unprivileged = contained_server(base_env, model_dir, cgroup, tmp_path / "server.log")
    try:
        name, photo = synthetic_payloads()[0]  # 4000×3000
        hostile = [("bomb.png", png_header_only(65000, 65000)), ("junk.jpg", os.urandom(200_000)),
                   ("cut.jpg", photo[: len(photo) // 3]), ("huge.jpg", b"\xff" * (9 * 2**20)),
                   ("many.gif", many_frames_gif(10_000))]
        # the photos ask, in turn, for each operation drawn at the answer's size after the cut-out;
        # an animation at the pixel limit is admitted first and runs through the burst
        operations = [{}, {"shadow": "drop"}, {"outline_width": "20"}, {"bg_blur": "2"},
                      {"output_size": "2000x2000", "padding": "5%", "shadow": "contact", "color": "white"},
                      {"output_size": "1200x1600", "outline_width": "8", "vertical_alignment": "bottom"}]
        uploads = [((name, photo), operations[i % len(operations)]) for i in range(12)]
        uploads += [(upload, {}) for upload in hostile * 2]
        with ThreadPoolExecutor(13) as pool:
            started = time.monotonic()
            animation = {"file": ("moving.gif", animation_at_the_pixel_limit(photo))}
            moving = pool.submit(server.post, "/api/bg/remove", files=animation,
                                 data={"format": "webp", "shadow": "drop"})
            deadline = time.monotonic() + 30
            while server.get("/api/bg/status").json()["queue"]["admitted"] == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            responses = list(pool.map(lambda upload: server.post("/api/bg/remove", files={"file": upload[0]},
                                                                 data=upload[1]), uploads))
            animated = moving.result()
            animation_s = time.monotonic() - started
        assert animated.status_code == 200 and animated.headers["X-Frames"] == "10", animated.text[:200]
        with Image.open(io.BytesIO(animated.content)) as answer:
            assert answer.format == "WEBP" and answer.n_frames == 10
        statuses = [r.status_code for r in responses]
        assert all(s < 300 or 400 <= s < 500 or s == 503 for s in statuses), statuses
        assert statuses[:12].count(200) >= 1, statuses
        # What the declared size, the sniffed type or the declared pixels settle gets its 4xx even
        # when the queue is full; a file only reading it whole shows to be cut, or to hold too many
        # frames, may get 503 then.
        for ((upload, _), _), status in zip(uploads[12:], statuses[12:]):
            assert 400 <= status < 500 or (upload in ("cut.jpg", "many.gif") and status == 503), (upload, statuses)
        assert cgroup.oom_kills() == 0
        assert server.process.poll() is None and server.get("/api/bg/health").status_code == 200
        print(f"\ncgroup peak {cgroup.peak_mb():.0f} MB of {LIMIT_MB}, {'as nobody' if unprivileged else 'as root'}; "
              f"statuses {statuses}; the animation answered in {animation_s:.0f} s")
    finally:
        server.stop()


def test_a_batch_of_100_photos_with_some_of_12_mp_is_answered_inside_512_mb(base_env, model_dir, cgroup, tmp_path,
                                                                           photos):
    rng = np.random.default_rng(7)
    sources = []
    for path in photos.values():
        with Image.open(path) as photo:
            sources.append(photo.convert("RGB"))
    uploads = []
    for i in range(96):  # phone and shop sizes, 256 to 2048 px on the long side
        long_side = int(rng.integers(256, 2049))
        image = sources[i % len(sources)]
        scale = long_side / max(image.size)
        resized = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
        uploads.append(("file", (f"photo-{i}.jpg", save(resized, "JPEG", quality=85))))
    big = synthetic_payloads()[0][1]  # 4000×3000
    for position in (10, 40, 70, 95):
        uploads.insert(position, ("file", (f"large-{position}.jpg", big)))
    total_mb = sum(len(data) for _, (_, data) in uploads) / 2**20
    server, unprivileged = contained_server(base_env, model_dir, cgroup, tmp_path / "server.log")
    try:
        started = time.monotonic()
        response = server.post("/api/bg/batch", files=uploads)
        seconds = time.monotonic() - started
        assert response.status_code == 200, response.text
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            manifest = json.loads(archive.read("manifest.json"))
            assert len(archive.namelist()) == 101
        assert manifest["images"] == manifest["succeeded"] == 100, manifest
        assert cgroup.oom_kills() == 0
        assert server.process.poll() is None and server.get("/api/bg/health").status_code == 200
        print(f"\nbatch of 100 ({total_mb:.0f} MB, 4 of 12 MP) in {seconds:.0f} s; cgroup peak "
              f"{cgroup.peak_mb():.0f} MB of {LIMIT_MB}, {'as nobody' if unprivileged else 'as root'}")
    finally:
        server.stop()
