"""A memory cgroup, as a container host enforces a memory limit: the bench's ``--memory-limit``
and the ceiling test run the server inside one.

cgroup v2 where the unified hierarchy offers the memory controller, else v1's memory
hierarchy; both need write access to /sys/fs/cgroup (root, or a delegated subtree).
Usage counts the page cache the processes touch too, as a host's limit does.
"""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

ROOTS = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))  # v2 mounts
V1 = Path("/sys/fs/cgroup/memory")


class CgroupUnavailable(RuntimeError):
    """No memory cgroup can be made here; the message says why."""


def _v2_root() -> Path | None:
    for root in ROOTS:
        controllers = root / "cgroup.controllers"
        if controllers.is_file() and "memory" in controllers.read_text().split():
            return root
    return None


class MemoryCgroup:
    """A new memory cgroup of ``limit_mb`` MiB, swap off; ``enter`` moves a process into it
    (its children follow). Remove it with ``remove()`` once its processes have exited."""

    def __init__(self, limit_mb: int, prefix: str = "bg-removal"):
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        root = _v2_root()
        try:
            if root is not None:
                self.version, self.path = 2, root / name
                self.path.mkdir()
                (self.path / "memory.max").write_text(str(limit_mb * 2**20))
                if (self.path / "memory.swap.max").exists():
                    (self.path / "memory.swap.max").write_text("0")
            elif (V1 / "memory.limit_in_bytes").is_file():
                self.version, self.path = 1, V1 / name
                self.path.mkdir()
                (self.path / "memory.limit_in_bytes").write_text(str(limit_mb * 2**20))
                if (self.path / "memory.memsw.limit_in_bytes").exists():
                    (self.path / "memory.memsw.limit_in_bytes").write_text(str(limit_mb * 2**20))
            else:
                raise CgroupUnavailable("this machine offers no memory cgroup controller")
        except OSError as exc:
            raise CgroupUnavailable(f"cannot make a memory cgroup here ({exc.strerror}: {exc.filename})") from None
        self.limit_mb = limit_mb

    def enter(self, pid: int | None = None) -> None:
        """Move process ``pid`` (default: the caller; use it as a Popen ``preexec_fn``) into the cgroup."""
        (self.path / "cgroup.procs").write_text(str(pid or os.getpid()))

    def _counter(self, filename: str, key: str) -> int:
        for line in (self.path / filename).read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
        return 0

    def oom_kills(self) -> int:
        """Processes the kernel killed in this cgroup for want of memory."""
        return self._counter("memory.events", "oom_kill") if self.version == 2 else \
            self._counter("memory.oom_control", "oom_kill")

    def peak_mb(self) -> float | None:
        """The cgroup's highest memory use so far (MiB), where the kernel reports it."""
        peak = self.path / ("memory.peak" if self.version == 2 else "memory.max_usage_in_bytes")
        return int(peak.read_text()) / 2**20 if peak.exists() else None

    def remove(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.path.rmdir()
                return
            except OSError:  # processes still leaving
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
