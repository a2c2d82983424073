"""``GET`` and ``POST /api/remove``: rembg's server (``rembg s``), so that its clients work by
changing only their base URL.

rembg's parameters (``model``, ``a``, ``af``, ``ab``, ``ae``, ``om``, ``ppm``, ``bgc``,
``extras``; the form or the query) are rows of the parameter table (service/http/params.py); the
answer is always ``image/png`` at the photo's own size (up to MAX_OUTPUT_PIXELS), and errors come
as rembg's ``{"detail": …}``. The requests pass the same admission gate, size limits and API keys
as the rest; ``GET …?url=`` fetches only where ALLOW_IMAGE_URL is set, from public addresses
(service/http/download.py). Unknown fields are left unread, as rembg's server leaves them.
"""
from __future__ import annotations

import json
import time

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from ..model.catalog import CATALOG
from .download import download
from ..errors import BadRequest, MissingFile, Unauthorized
from ..library import REMBG_NAMES, finish, png
from .params import REMBG, options_of, read_form
from ..pipeline import Options
from .web import admit_request, request_deadline, run_pipeline
from .answers import answer_errors, quality_headers
from .state import count_request, current_model, current_settings, key_accepted
from .uploads import read_file

bp = Blueprint("rembg", __name__, url_prefix="/api")


def _detail(status: int, detail: str, headers: dict | None = None) -> Response:
    response = jsonify(detail=detail)
    response.status_code = status
    response.headers.update(headers or {})
    return response


answer_errors(bp, lambda exc: _detail(exc.status, exc.message, exc.headers()))


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    return _detail(exc.code or 500, exc.description or exc.name)


def _values() -> dict:
    """rembg's fields from the query and the form, read by the parameter table."""
    texts = {name: value for name, value in request.args.items() if value}
    texts.update({name: value for name, value in request.form.items() if value})
    return read_form(REMBG, texts, [name for name in request.files if name not in texts], strict=False)


def _model(values: dict) -> None:
    """The model asked for must be the one this server serves (by its name or rembg's)."""
    asked = values.get("model")
    serving = current_model().engine.spec.name
    if asked and REMBG_NAMES.get(asked, asked) != serving:
        known = "" if asked in CATALOG or asked in REMBG_NAMES else " (not a model this service has)"
        raise BadRequest(f"this server serves {serving}; model={asked!r}{known} would need a server started "
                         f"with BG_REMOVAL_MODEL={REMBG_NAMES.get(asked, asked)}")


def _background(values: dict) -> tuple[int, ...] | None:
    """``bgc``: a JSON list of four (or three) values 0–255."""
    if "bgc" not in values:
        return None
    try:
        color = json.loads(values["bgc"])
    except ValueError:
        color = None
    if (not isinstance(color, list) or len(color) not in (3, 4)
            or not all(isinstance(v, int) and 0 <= v <= 255 for v in color)):
        raise BadRequest(f"bgc is a JSON list [R, G, B, A] of 0–255, got {values['bgc'][:40]!r}")
    return tuple(color) if len(color) == 4 else (*color, 255)


def _answer(fetch) -> Response:
    """Run one photo (``fetch()``: its bytes, read or downloaded when its turn comes) as rembg does."""
    if not key_accepted():
        raise Unauthorized("missing or wrong X-API-Key header")
    count_request()
    started, deadline = time.perf_counter(), request_deadline()
    with admit_request(deadline) as turn:
        values = _values()
        _model(values)
        bgcolor = _background(values)
        options = Options(fmt=None, output_pixels=current_settings().max_output_pixels, frames="first",
                          **options_of(values))
        with turn():
            result = run_pipeline(fetch(values, deadline), options, deadline)
            image = finish(result, options.only_mask, bool(values.get("ppm")), bgcolor)
    response = Response(png(image), mimetype="image/png")
    response.headers.update(quality_headers(result))
    response.headers["X-Model-Used"] = result.model
    response.headers["X-Processing-Time-Ms"] = str(round((time.perf_counter() - started) * 1000))
    return response


@bp.post("/remove")
def remove():
    def uploaded(values: dict, deadline: float) -> bytes:
        upload = request.files.get("file")
        if upload is None:
            raise MissingFile("no file: send the image as multipart form field 'file'")
        return read_file(upload, "file")

    return _answer(uploaded)


@bp.get("/remove")
def remove_url():
    def fetched(values: dict, deadline: float) -> bytes:
        settings = current_settings()
        if not values.get("url"):
            raise BadRequest("no url: give the photo's address as ?url=")
        if not settings.allow_image_url:
            raise BadRequest("url is not enabled on this server (ALLOW_IMAGE_URL): POST the image itself")
        timeout = min(settings.image_url_timeout, max(0.1, deadline - time.monotonic()))
        return download(values["url"], settings.max_file_size, timeout, settings.image_url_networks, "url")

    return _answer(fetched)
