"""Typed errors: what a client may be told, with its HTTP status and short code.

Every error a client can see is ``{"error": "<message>", "code": "<short_code>"}``
with an HTTP status; no stack trace ever leaves the process. The handlers that answer them
are in service/http/answers.py: this module imports no web framework, so that the settings (which
know the key file's errors) load without Flask in gunicorn's master.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """A failure with a status and a short code, safe to show to the client."""
    status = 500
    code = "internal_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def headers(self) -> dict[str, str]:
        """Headers the answer carries besides the JSON body."""
        return {}


class BadRequest(ServiceError):
    status, code = 400, "bad_request"


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"


class MissingFile(ServiceError):
    status, code = 400, "missing_file"


class NotAnImage(ServiceError):
    status, code = 400, "not_an_image"


class BadColor(ServiceError):
    status, code = 400, "bad_color"


class FileTooLarge(ServiceError):
    status, code = 413, "file_too_large"


class ImageTooLarge(ServiceError):
    status, code = 413, "image_too_large"


class UnsupportedType(ServiceError):
    status, code = 415, "unsupported_type"


class Busy(ServiceError):
    """The server can't take the image now; the answer carries Retry-After."""
    status, code = 503, "busy"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class TimedOut(Busy):
    code = "timeout"


class InferenceFailed(ServiceError):
    status, code = 500, "inference_failed"


class OutOfMemory(Busy):
    """The model run could not get the memory it needs: the server's state, not the client's
    error, and perhaps gone in a moment (503 with Retry-After)."""
    code = "out_of_memory"


def memory_exhausted(exc: MemoryError) -> OutOfMemory:
    """What a MemoryError outside the model run (decoding, compositing a large answer) is
    answered as, by every API: 503 with Retry-After."""
    log.error("out of memory: %s", exc)
    return OutOfMemory("the server could not get the memory for this image; retry shortly, or send a smaller one",
                       retry_after=10)
