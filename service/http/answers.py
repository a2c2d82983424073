"""What goes back: the image answer and its headers, and the error answers of every API (the
app's ``{"error": …}``, and remove.bg's and rembg's shapes through :func:`answer_errors`)."""
from __future__ import annotations

import logging
import time
from typing import Callable

from flask import Blueprint, Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ..errors import FileTooLarge, ServiceError, memory_exhausted
from ..pipeline import Result
from .state import current_settings
from .uploads import drain_body

log = logging.getLogger(__name__)


def image_response(result: Result, fmt: str, filename: str, started: float) -> Response:
    response = Response(result.body, mimetype=f"image/{fmt}")
    response.headers.update(quality_headers(result))
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["X-Model-Used"] = result.model
    if result.frames > 1:
        response.headers["X-Frames"] = str(result.frames)
    response.headers["X-Processing-Time-Ms"] = str(round((time.perf_counter() - started) * 1000))
    return response


def quality_headers(result: Result) -> dict[str, str]:
    """X-Mask-Confidence, and X-Mask-Warning where the mask looks wrong (service/imaging/confidence.py)."""
    headers = {"X-Mask-Confidence": f"{result.confidence:.3f}"}
    if result.warning:
        headers["X-Mask-Warning"] = result.warning
    return headers


# The answers to errors, in one place for every API.

def error_response(status: int, code: str, message: str, headers: dict | None = None):
    response = jsonify(error=message, code=code)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def answer_errors(target: Flask | Blueprint, answer: Callable[[ServiceError], Response]) -> None:
    """Register on ``target`` (the app, or the blueprint of an API with its own error shape) the
    handlers that answer a ServiceError, an upload over MAX_FILE_SIZE_MB and a MemoryError with
    ``answer``, which writes a ServiceError as that API writes its errors."""
    target.register_error_handler(ServiceError, answer)
    target.register_error_handler(MemoryError, lambda exc: answer(memory_exhausted(exc)))

    def too_large(exc: RequestEntityTooLarge) -> Response:
        drain_body()
        response = answer(FileTooLarge(f"the upload is larger than {current_settings().max_file_size_mb} MB"))
        response.headers["Connection"] = "close"
        return response

    target.register_error_handler(RequestEntityTooLarge, too_large)


def register_error_handlers(app: Flask) -> None:
    """The app's own error answers (``{"error": …}``): typed errors, Werkzeug's HTTP errors, and a
    500 for anything unexpected."""
    answer_errors(app, lambda exc: error_response(exc.status, exc.code, exc.message, exc.headers()))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = _snake((exc.name or "error").replace(" ", ""))
        response = error_response(exc.code or 500, code, exc.description or exc.name)
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, ServiceError.code, "internal error; the request was not processed")
