"""Helpers for the tests: where the shared data is, images made on the spot, a live server process."""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "s3cret-test-key"            # the key of the keyed_server fixture
CORS_ORIGIN = "https://photos.example"  # the one origin it allows
SHARED = ROOT.parent / "shared"
SAMPLES = SHARED / "samples"


def mirror() -> str | None:
    if os.environ.get("BG_MODEL_MIRROR"):
        return os.environ["BG_MODEL_MIRROR"]
    default = SHARED / "models"
    return str(default) if default.is_dir() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen
    log: Path

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, timeout=120, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return requests.post(self.url + path, timeout=120, **kw)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def log_entries(server: LiveServer) -> list[dict]:
    """The server's request log lines (one JSON object each) so far."""
    return [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]


def start_server(env: dict[str, str], log: Path, timeout: float = 90, preexec_fn=None,
                 command: list[str] | None = None, port: int | None = None) -> LiveServer:
    """Start ``python app_isnet_tiny.py`` on a free loopback port and wait until it is healthy;
    ``preexec_fn`` runs in the child before the server starts (joining a cgroup, dropping root).
    Another ``command`` (the image's) gets ``env`` as it is and must listen on ``port``."""
    if command is None:
        port = free_port()
        env = {**env, "PORT": str(port), "HOST": "127.0.0.1"}
    out = open(log, "wb")
    process = subprocess.Popen(command or [sys.executable, "app_isnet_tiny.py"], cwd=ROOT, env=env,
                               stdout=out, stderr=subprocess.STDOUT, preexec_fn=preexec_fn)
    out.close()
    server = LiveServer(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if server.get("/api/bg/health").status_code == 200:
                return server
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server not healthy after {timeout} s:\n{log.read_text()}")


def cap_address_space(server: LiveServer, headroom_mb: int | None) -> None:
    """Cap the address space of ``server``'s worker at what it maps now plus ``headroom_mb``
    (RLIMIT_AS, set from outside), or lift the cap (None): allocations past it fail inside the
    process, as on a host without overcommit or on a full GPU, instead of the kernel killing it."""
    import psutil

    (worker,) = psutil.Process(server.process.pid).children()
    limit = psutil.RLIM_INFINITY if headroom_mb is None else worker.memory_info().vms + headroom_mb * 2**20
    worker.rlimit(psutil.RLIMIT_AS, (limit, psutil.RLIM_INFINITY))


def save(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def gradient(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=2).astype(np.uint8), "RGB")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width×height and carries almost no data (a decompression-bomb header)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def many_frames_gif(count: int) -> bytes:
    """A GIF of ``count`` 2×2 frames: tiny on disk, an animation bomb by its frame count."""
    tiny = [Image.new("P", (2, 2), i % 2) for i in range(count)]
    buffer = io.BytesIO()
    tiny[0].save(buffer, "GIF", save_all=True, append_images=tiny[1:], optimize=False)
    return buffer.getvalue()


class ImageHost:
    """A web server on a loopback address, in a thread of the test process, that serves what
    the tests give it: ``files[path] = bytes``, ``redirects[path] = location``, ``slow`` paths
    that trickle a byte a second. ``requests`` lists the paths it was asked for; ``posts`` the
    POSTs it received (path, headers, body), answered with ``post_statuses.pop(0)`` while that
    list lasts, then 200 (a webhook receiver)."""

    def __init__(self, address: str = "127.0.0.1"):
        import http.server
        import threading

        host = self
        self.files: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}
        self.slow: set[str] = set()
        self.requests: list[str] = []
        self.posts: list[tuple[str, dict, bytes]] = []
        self.post_statuses: list[int] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                host.posts.append((self.path, dict(self.headers), body))
                self.send_response(host.post_statuses.pop(0) if host.post_statuses else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                host.requests.append(self.path)
                if self.path in host.redirects:
                    self.send_response(302)
                    self.send_header("Location", host.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif self.path in host.slow:
                    self.send_response(200)
                    self.end_headers()
                    for _ in range(30):
                        try:
                            self.wfile.write(b"x")
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(1)
                elif self.path in host.files:
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.end_headers()  # no Content-Length: the body's own size must be counted
                    self.wfile.write(host.files[self.path])
                else:
                    self.send_error(404)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((address, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{address}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class RedisServer:
    """Debian's redis-server on a free loopback port, its data in ``folder``, with the append-only
    file on (every write fsync'd) so that a restart keeps what was acknowledged."""

    def __init__(self, folder: Path):
        import shutil

        self.binary = shutil.which("redis-server")
        if not self.binary:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
        self.folder, self.port = folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.start()

    def start(self) -> None:
        with open(self.folder / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                 "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start:\n{(self.folder / 'redis.log').read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def start_worker(env: dict[str, str], log: Path, timeout: float = 90) -> subprocess.Popen:
    """``python -m service worker`` with ``env``; returns once it has said it is working."""
    out = open(log, "wb")
    process = subprocess.Popen([sys.executable, "-m", "service", "worker"], cwd=ROOT, env=env,
                               stdout=out, stderr=subprocess.STDOUT)
    out.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"worker exited with {process.returncode}:\n{log.read_text()}")
        if "Listening on" in log.read_text() or "listening on" in log.read_text().lower():
            return process
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"worker not working after {timeout} s:\n{log.read_text()}")


def npm_install(folder: Path, package: str) -> Path:
    """``npm install package`` into ``folder``; skips the test where node and npm are missing
    (fails with REQUIRE_NODE, as .ci/run sets)."""
    import shutil

    import pytest

    if not (shutil.which("node") and shutil.which("npm")):
        if os.environ.get("REQUIRE_NODE"):
            pytest.fail("no node and npm (apt-get install nodejs npm)")
        pytest.skip("node and npm are not installed")
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent", package], cwd=folder, check=True,
                   capture_output=True, timeout=300)
    return folder
