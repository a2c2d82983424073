"""Typed errors, and the one place that turns any error into the JSON answer.

Every error a client can see is ``{"error": "<message>", "code": "<short_code>"}``
with an HTTP status; no stack trace ever leaves the process.
"""
from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

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


def error_response(status: int, code: str, message: str, headers: dict | None = None):
    response = jsonify(error=message, code=code)
    response.status_code = status
    response.headers.update(headers or {})
    return response


# An oversized body up to this size is read and dropped before the 413 goes out: a client
# still sending when the server closes gets a broken pipe instead of the answer (Python's
# urllib, browsers' fetch). A larger one is answered at once and the connection closed.
DRAIN_LIMIT = 64 * 1024 * 1024


def drain_body() -> None:
    """Read and drop what is left of this request's declared body, up to DRAIN_LIMIT bytes."""
    length = request.content_length
    if not length or length > DRAIN_LIMIT:
        return
    stream = request.environ["wsgi.input"]
    while length > 0:
        chunk = stream.read(min(length, 1 << 16))
        if not chunk:
            break
        length -= len(chunk)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def register_error_handlers(app: Flask, max_file_size_mb: int) -> None:
    @app.errorhandler(ServiceError)
    def _service_error(exc: ServiceError):
        return error_response(exc.status, exc.code, exc.message, exc.headers())

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc):
        drain_body()
        response = error_response(413, FileTooLarge.code, f"upload is larger than {max_file_size_mb} MB")
        response.headers["Connection"] = "close"
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = _snake((exc.name or "error").replace(" ", ""))
        response = error_response(exc.code or 500, code, exc.description or exc.name)
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(MemoryError)
    def _out_of_memory(exc: MemoryError):
        return _service_error(memory_exhausted(exc))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, ServiceError.code, "internal error; the request was not processed")
