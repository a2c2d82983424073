"""API keys and their rate limits.

Keys come from API_KEY (one), API_KEYS (several, separated by commas) and API_KEYS_FILE (one a
line: the key, then optionally its own limit in requests a minute; ``#`` starts a comment). A
key without a limit of its own gets RATE_LIMIT_PER_MINUTE (0: none). With no key at all, the
server is open and nothing is limited: the admission gate alone bounds its work.

A limit counts the requests that ask for work (POSTs: an image, a batch, a job) in fixed windows
of a minute, UTC-aligned, in this process: the server runs one worker process, so the count is
the server's; behind several replicas each counts its own. Answers to a limited key carry
remove.bg's ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (the
window's end, Unix seconds); a request past the limit gets 429 with them and ``Retry-After``.
"""
from __future__ import annotations

import hmac
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ServiceError

WINDOW_S = 60
Key = tuple[str, "int | None"]  # (the key, its own limit a minute or None for the default)


class KeyFileError(ValueError):
    """API_KEYS_FILE can't be read or has a line that is not a key and a limit."""


def read_key_file(path: Path) -> list[Key]:
    """The keys of an API_KEYS_FILE, in order. Raises KeyFileError, naming the line."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"API_KEYS_FILE {path} cannot be read: {exc.strerror or exc}") from None
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        if len(parts) > 2 or (len(parts) == 2 and not (parts[1].isdigit() and 0 < int(parts[1]) <= 1_000_000)):
            raise KeyFileError(f"API_KEYS_FILE {path} line {number}: write a key, then optionally its limit in "
                               f"requests a minute (1 to 1000000)")
        keys.append((parts[0], int(parts[1]) if len(parts) == 2 else None))
    return keys


@dataclass(frozen=True)
class Window:
    """A key's limit, what is left of it and when the current window ends (Unix seconds)."""
    limit: int
    remaining: int
    reset: int

    def headers(self) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining),
                "X-RateLimit-Reset": str(self.reset)}


class RateLimited(ServiceError):
    status, code = 429, "rate_limited"

    def __init__(self, window: Window, now: float):
        self.retry_after = max(1, math.ceil(window.reset - now))
        super().__init__(f"this API key's limit of {window.limit} requests a minute is reached; "
                         f"retry in {self.retry_after} s")
        self.window = window

    def headers(self) -> dict[str, str]:
        return {**self.window.headers(), "Retry-After": str(self.retry_after)}


class KeyRing:
    """The server's keys (in order; a key's index names it), each one's limit and its count in the
    current window."""

    def __init__(self, keys: list[Key], default_limit: int | None, clock: Callable[[], float] = time.time):
        self._secrets = [key.encode() for key, _ in keys]
        self._limits = [limit or default_limit for _, limit in keys]
        self._clock = clock
        self._lock = threading.Lock()
        self._used: dict[int, tuple[int, int]] = {}  # key index → (window number, requests in it)

    @property
    def required(self) -> bool:
        return bool(self._secrets)

    def match(self, presented: str | None) -> int | None:
        """The index of the key ``presented`` is, or None; every key is compared, in constant
        time, whichever matches."""
        given, found = (presented or "").encode(), None
        for index, secret in enumerate(self._secrets):
            if hmac.compare_digest(given, secret) and found is None:
                found = index
        return found

    def _window(self, index: int, now: float, taking: bool) -> Window | None:
        limit = self._limits[index]
        if not limit:
            return None
        number = int(now // WINDOW_S)
        window, used = self._used.get(index, (number, 0))
        if window != number:
            used = 0
        reset = (number + 1) * WINDOW_S
        if taking:
            if used >= limit:
                raise RateLimited(Window(limit, 0, reset), now)
            used += 1
            self._used[index] = (number, used)
        return Window(limit, limit - used, reset)

    def take(self, index: int) -> Window | None:
        """Count one request of key ``index``: its window after it (None: no limit). Raises
        RateLimited when the window is full."""
        with self._lock:
            return self._window(index, self._clock(), taking=True)

    def peek(self, index: int) -> Window | None:
        """Key ``index``'s window as it stands (None: no limit)."""
        with self._lock:
            return self._window(index, self._clock(), taking=False)
