"""``remove --server URL``: the CLI's work sent to a running service, over plain HTTP (stdlib only).

A busy service (503) is waited for as its Retry-After says, up to MAX_WAIT seconds in all for
one image; any other error answer becomes the image's failure, with the service's own message.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid

from .errors import ServiceError

MAX_WAIT = 600.0


class RemoteError(ServiceError):
    status, code = 502, "remote_error"


class Remote:
    def __init__(self, url: str, api_key: str | None, fmt: str, only_mask: bool, refine: bool, color: str | None):
        self.url = url.rstrip("/") + ("/api/bg/change_color" if color else "/api/bg/remove")
        self.api_key = api_key
        self.fields = {"format": fmt, "only_mask": str(only_mask).lower(), "refine": str(refine).lower(),
                       **({"color": color} if color else {})}

    def _body(self, files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                 for k, v in self.fields.items()]
        for name, data in files:
            safe = "".join(c for c in name if c.isascii() and (c.isalnum() or c in "-_.")) or "image"
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{safe}"\r\n'
                         f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
        return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"

    def _headers(self, **more) -> dict[str, str]:
        return {**more, **({"X-API-Key": self.api_key} if self.api_key else {})}

    def cut_out(self, data: bytes) -> bytes:
        """The service's answer for one image's bytes. Raises RemoteError with its message."""
        return self._send(self.url, [("image", data)])

    def _send(self, url: str, files: list[tuple[str, bytes]] | None = None) -> bytes:
        """POST ``files`` (GET without), waiting out 503s as Retry-After says; the answer's body."""
        body, content_type = self._body(files) if files is not None else (None, "")
        headers = self._headers(**({"Content-Type": content_type} if files is not None else {}))
        waited = 0.0
        while True:
            request = urllib.request.Request(url, data=body, headers=headers, method="POST" if body else "GET")
            try:
                with urllib.request.urlopen(request, timeout=300) as response:
                    return response.read()
            except urllib.error.HTTPError as exc:
                retry = exc.headers.get("Retry-After")
                message = _message(exc)
                if exc.code != 503 or not retry or waited >= MAX_WAIT:
                    raise RemoteError(f"the service answered {exc.code}: {message}") from None
                pause = min(float(retry), MAX_WAIT - waited)
                time.sleep(pause)
                waited += pause
            except (urllib.error.URLError, OSError) as exc:
                raise RemoteError(f"the service at {self.url} cannot be reached: {exc}") from None


class RemoteJobs(Remote):
    """``remove --server URL --jobs``: images sent as jobs (POST /api/bg/jobs), results fetched
    when each job ends. For folders larger than one request should carry, and for clients
    behind proxies that cut long requests."""

    def __init__(self, url: str, api_key: str | None, fmt: str, only_mask: bool, refine: bool, color: str | None):
        super().__init__(url, api_key, fmt, only_mask, refine, color)
        self.base = url.rstrip("/")
        self.url = self.base + "/api/bg/jobs"

    def submit(self, files: list[tuple[str, bytes]]) -> str:
        """A job for ``files`` (name, bytes); its status URL."""
        return self.base + json.loads(self._send(self.url, files))["status_url"]

    def wait(self, status_url: str, poll: float = 0.5) -> dict:
        """The job's state once it has ended."""
        while True:
            state = json.loads(self._send(status_url))
            if state["state"] in ("finished", "failed"):
                return state
            time.sleep(poll)

    def result(self, path: str) -> bytes:
        return self._send(self.base + path)


def _message(error: urllib.error.HTTPError) -> str:
    try:
        return json.loads(error.read())["error"]
    except (ValueError, KeyError, TypeError):
        return error.reason
