"""Build Dockerfile.isnet-tiny with podman and run the image as a container runtime would, on a
machine where no container runtime can start a container and no image registry is reachable.

- The base image ``python:3.11-slim`` is stood in for by Debian bookworm (whose python3 is 3.11)
  made with debootstrap from the machine's own Debian mirror, imported as
  ``localhost/python:3.11-slim``; nothing else of the Dockerfile is changed.
- podman builds with chroot isolation and the host's network, with the host's CA bundle over the
  image's own for the build's downloads (pip and npm must trust what the host trusts).
- The OCI runtimes can't start a container here (crun refuses cgroup v1's hybrid mode, runc can't
  set rlimits), so the image's own file system (``podman image mount``) is run as its config
  says: its ENV, USER, WORKDIR and CMD, in a mount namespace of its own with the root read-only,
  a tmpfs on /tmp, and the host's /proc, /dev and /sys.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BASE = "localhost/python:3.11-slim"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # Debian's path, on the host and in the image
PACKAGES = {"podman": "podman", "debootstrap": "debootstrap", "unshare": "util-linux"}


class ImageUnavailable(RuntimeError):
    """The image can't be built or run here; the message says why."""


def ensure_tools() -> None:
    """podman and debootstrap, installed from Debian's packages where they are missing (root only)."""
    missing = [package for tool, package in PACKAGES.items() if not shutil.which(tool)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise ImageUnavailable(f"building the image needs root and {', '.join(missing)} (apt-get install)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode:
            raise ImageUnavailable(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 sources first, then sources.list)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.is_file():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    listing = Path("/etc/apt/sources.list")
    if listing.is_file():
        for line in listing.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and not parts[1].startswith("["):
                return parts[1]
    raise ImageUnavailable("no Debian mirror in this machine's apt sources, for debootstrap")


def podman(*args: str, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, **kw)
    if done.returncode:
        raise ImageUnavailable(f"podman {' '.join(args[:2])} failed: {(done.stderr or done.stdout).strip()[-2000:]}")
    return done


def ensure_base_image() -> None:
    """``localhost/python:3.11-slim`` from Debian bookworm, made once per machine (a few minutes)."""
    if subprocess.run(["podman", "image", "exists", BASE], capture_output=True).returncode == 0:
        return
    with tempfile.TemporaryDirectory(prefix="bg-removal-base-") as folder:
        rootfs = Path(folder) / "rootfs"
        done = subprocess.run(["debootstrap", "--variant=minbase",
                               "--include=python3,python3-venv,python3-pip,ca-certificates",
                               "bookworm", str(rootfs), debian_mirror()], capture_output=True, text=True, timeout=1800)
        if done.returncode:
            raise ImageUnavailable(f"debootstrap failed: {done.stdout.strip()[-1000:]}")
        (rootfs / "usr/local/bin/python").symlink_to("/usr/bin/python3")  # as the official image has it
        with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
            podman("import", "-", BASE, stdin=tar.stdout)


def base_size() -> int:
    (inspected,) = json.loads(podman("image", "inspect", BASE).stdout)
    return inspected["Size"]


def build(context: Path, dockerfile: str, tag: str) -> float:
    """Build ``dockerfile`` into ``tag`` (Docker's format: it keeps HEALTHCHECK); seconds taken."""
    started = time.monotonic()
    volumes = ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"] if CA_BUNDLE.is_file() else []
    podman("build", "--format", "docker", "--isolation", "chroot", "--network", "host", "--pull=never",
           *volumes, "-f", dockerfile, "-t", tag, str(context), timeout=3600)
    return time.monotonic() - started


@dataclass
class Image:
    """A built image: its config (and HEALTHCHECK), and its file system mounted at ``root``."""
    tag: str
    root: Path
    config: dict
    healthcheck: dict | None
    size: int

    @classmethod
    def mount(cls, tag: str) -> "Image":
        (inspected,) = json.loads(podman("image", "inspect", tag).stdout)
        root = Path(podman("image", "mount", tag).stdout.strip())
        return cls(tag, root, inspected["Config"], inspected.get("Healthcheck"), inspected["Size"])

    def unmount(self) -> None:
        subprocess.run(["podman", "image", "unmount", self.tag], capture_output=True)

    @property
    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.config.get("Env", []))

    def user_ids(self) -> tuple[int, int]:
        """The uid and gid of the image's USER, from the image's own /etc/passwd."""
        user = self.config.get("User") or "root"
        for line in (self.root / "etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if user in (fields[0], fields[2]):
                return int(fields[2]), int(fields[3])
        raise ImageUnavailable(f"the image's user {user!r} is not in its /etc/passwd")

    def command(self, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
        """A command line that runs ``argv`` in the image as a container would: the image's ENV
        (updated by ``env``), USER and WORKDIR, a read-only root, a tmpfs /tmp."""
        uid, gid = self.user_ids()
        variables = [f"{k}={v}" for k, v in {**self.env, **(env or {})}.items()]
        script = ('set -e; root="$1"; shift; mount --make-rprivate /; mount --bind "$root" "$root"; '
                  'mount -o remount,bind,ro "$root"; mount -t tmpfs -o size=64m,mode=1777 tmpfs "$root/tmp"; '
                  'mount -t proc proc "$root/proc"; mount --rbind /dev "$root/dev"; mount --rbind /sys "$root/sys"; '
                  'exec chroot "$@"')
        workdir = self.config.get("WorkingDir") or "/"
        return ["unshare", "--mount", "sh", "-c", script, "sh", str(self.root), f"--userspec={uid}:{gid}",
                str(self.root), "/usr/bin/env", "-i", *variables, "sh", "-c", 'cd "$0" && exec "$@"', workdir, *argv]
