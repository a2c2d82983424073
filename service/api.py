"""HTTP API under /api/bg, and the page at /."""
from __future__ import annotations

import hmac
import time
from pathlib import PurePosixPath

from flask import Blueprint, Response, current_app, jsonify, render_template, request
from werkzeug.exceptions import RequestEntityTooLarge

from . import __version__
from .config import ALLOWED_EXTENSIONS, Settings
from .engine import Engine, integer_class
from .errors import BadRequest, FileTooLarge, MissingFile, Unauthorized
from .gate import AdmissionGate
from .imaging import parse_color
from .memory import peak_rss_mb, release_memory, rss_mb
from .pipeline import Options, cut_out
from .requestlog import note

bp = Blueprint("bg", __name__, url_prefix="/api/bg")
pages = Blueprint("pages", __name__)


def _settings() -> Settings:
    return current_app.extensions["bg_settings"]


def _engine() -> Engine:
    return current_app.extensions["bg_engine"]


def _gate() -> AdmissionGate:
    return current_app.extensions["bg_gate"]


@bp.before_request
def _require_api_key():
    """With API_KEY set, every POST under /api/bg needs it in X-API-Key (compared in constant time)."""
    key = _settings().api_key
    if key and request.method == "POST":
        given = request.headers.get("X-API-Key", "")
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise Unauthorized("missing or wrong X-API-Key header")


def _upload() -> tuple[bytes, str]:
    """The ``file`` field's bytes and a safe stem for the download name."""
    upload = request.files.get("file")
    if upload is None:
        raise MissingFile("no file: send the image as multipart form field 'file'")
    data = upload.stream.read(_settings().max_file_size + 1)
    if len(data) > _settings().max_file_size:
        raise FileTooLarge(f"upload is larger than {_settings().max_file_size_mb} MB")
    if not data:
        raise MissingFile("the uploaded file is empty")
    # The name is only echoed back in Content-Disposition, never used as a path. HTTP
    # headers are Latin-1: anything but ASCII letters, digits and -_. is dropped.
    stem = PurePosixPath((upload.filename or "image").replace("\\", "/")).stem
    stem = "".join(c for c in stem if c.isascii() and (c.isalnum() or c in "-_."))[:100] or "image"
    return data, stem


def _field(name: str) -> str | None:
    """A request option, from the multipart form or else the query string."""
    return request.form.get(name) or request.args.get(name)


def _choice(name: str, allowed: tuple[str, ...], default: str) -> str:
    value = (_field(name) or default).strip().lower()
    if value == "jpg":
        value = "jpeg"
    if value not in allowed:
        raise BadRequest(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _image_response(body: bytes, fmt: str, filename: str, started: float) -> Response:
    response = Response(body, mimetype=f"image/{fmt}")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["X-Model-Used"] = _engine().spec.name
    response.headers["X-Processing-Time-Ms"] = str(round((time.perf_counter() - started) * 1000))
    return response


def _deadline() -> float:
    """When this request's time is up, as a time.monotonic() value: REQUEST_TIMEOUT_S from now."""
    return time.monotonic() + _settings().request_timeout


def _answer(data: bytes, options: Options, deadline: float) -> bytes:
    """The pipeline's encoded answer for this upload; notes pixels and mask time for the log line."""
    result = cut_out(data, _engine(), _settings(), options, deadline)
    note(pixels=result.decoded.rgb.width * result.decoded.rgb.height, model_ms=round(result.model_ms, 1))
    return result.body


def _flag(name: str) -> bool:
    value = _field(name) or "false"
    if value not in ("true", "false"):
        raise BadRequest(f"{name} must be true or false, got {value!r}")
    return value == "true"


def _admit(deadline: float):
    """Enter the admission gate with this request's declared body size, before the body is read
    (503 at once when the waiting uploads or the expected wait are over their limits)."""
    size = request.content_length or 0
    if size > current_app.config["MAX_CONTENT_LENGTH"]:
        raise RequestEntityTooLarge()  # answered (after draining the body) by the error handler
    return _gate().admit(size, deadline)


@bp.post("/remove")
def remove():
    started, deadline = time.perf_counter(), _deadline()
    with _admit(deadline) as turn:
        data, stem = _upload()
        fmt = _choice("format", ("png", "webp"), "png")
        only_mask, refine = _flag("only_mask"), _flag("refine")
        with turn():
            body = _answer(data, Options(fmt=fmt, only_mask=only_mask, refine=refine), deadline)
    prefix = "mask" if only_mask else "nobg"
    return _image_response(body, fmt, f"{prefix}_{stem}.{fmt}", started)


@bp.post("/change_color")
def change_color():
    started, deadline = time.perf_counter(), _deadline()
    with _admit(deadline) as turn:
        data, stem = _upload()
        color = parse_color(_field("color"))
        fmt = _choice("format", ("jpeg", "png"), "jpeg")
        refine = _flag("refine")
        with turn():
            body = _answer(data, Options(fmt=fmt, refine=refine, color=color), deadline)
    extension = "jpg" if fmt == "jpeg" else fmt
    return _image_response(body, fmt, f"bg_{stem}.{extension}", started)


@bp.get("/health")
def health():
    return jsonify(status="healthy", memory_mb=round(rss_mb(), 1), model_loaded=True)


@bp.get("/status")
def status():
    settings = _settings()
    return jsonify(
        status="ready",
        model=_engine().spec.name,
        version=__version__,
        threads=_engine().threads,
        float_weights=_engine().float_weights,
        cpu={"integer_class": integer_class(), "exact_int8_mode": _engine().exact_int8},
        memory={"rss_mb": round(rss_mb(), 1), "peak_rss_mb": round(peak_rss_mb(), 1), "model_loaded": True},
        queue={"admitted": _gate().admitted, "waiting_mb": round(_gate().waiting_bytes / 2**20, 1),
               "max_waiting_mb": settings.max_waiting // 2**20,
               "expected_wait_s": round(_gate().expected_wait(), 1)},
        max_file_size_mb=settings.max_file_size_mb,
        max_dimension=settings.max_dimension,
        allowed_extensions=list(ALLOWED_EXTENSIONS),
    )


@bp.post("/clear_cache")
def clear_cache():
    before = rss_mb()
    trimmed = release_memory()
    after = rss_mb()
    return jsonify(
        status="ok",
        malloc_trim=trimmed,
        memory_before_mb=round(before, 1),
        memory_after_mb=round(after, 1),
        freed_mb=round(max(0.0, before - after), 1),
    )


@bp.get("/openapi.json")
def openapi():
    from .openapi import openapi_document

    return jsonify(openapi_document(_settings()))


@pages.get("/")
def index():
    settings = _settings()
    return render_template(
        "index.html",
        model=_engine().spec.name,
        max_file_size_mb=settings.max_file_size_mb,
        max_dimension=settings.max_dimension,
        extensions=", ".join(ALLOWED_EXTENSIONS),
    )
