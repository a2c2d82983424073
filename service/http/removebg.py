"""``POST /v1.0/removebg`` and ``GET /v1.0/account``: remove.bg's requests and answers, so that a
remove.bg client works by changing only its base URL.

What is honoured, what is accepted without effect and what is refused is listed in docs/api.md's
compatibility table; a parameter this server cannot honour is refused with remove.bg's error
shape (``{"errors": [{"title", "code", "detail"}]}``), never silently answered differently.
"""
from __future__ import annotations

import base64
import binascii
import time
from dataclasses import replace

from flask import Blueprint, Response, g, jsonify, request
from PIL import Image
from werkzeug.exceptions import HTTPException

from .download import download
from ..errors import ServiceError
from ..imaging.geometry import parse_position, parse_roi, parse_scale, subject_box
from .params import REMOVEBG, TABLE, options_of
from ..pipeline import Options
from .web import admit_request, background, background_picture, request_deadline, run_pipeline
from .answers import answer_errors, quality_headers
from .state import count_request, current_settings, key_accepted, key_ring

bp = Blueprint("removebg", __name__, url_prefix="/v1.0")

# Output size: megapixels at most (None: the photo's own size).
SIZES = {"preview": 0.25, "small": 0.25, "regular": 0.25, "medium": 1.5, "hd": 4.0,
         "full": None, "4k": None, "auto": None}
FORMATS = ("auto", "png", "jpg", "webp", "zip")
# Accepted with no effect: one general model serves every kind of subject.
TYPES = ("auto", "person", "product", "car", "animal", "graphic", "graphics", "transportation", "other")
# Parameters accepted only with remove.bg's default value (anything else is refused).
DEFAULT_ONLY = {"type_level": ("none", "latest", "1", "2")}
# remove.bg's shadow types, and this server's contact shadow; car and 3D need models of their own.
SHADOW_TYPES = ("none", "drop", "contact")
MODEL_SHADOWS = ("car", "3d")
# free_calls of GET /v1.0/account where nothing limits the calls
UNLIMITED_CALLS = 1_000_000
# Our codes for bad parameters, in remove.bg's word.
_CODES = {"bad_request": "invalid_parameters", "bad_color": "invalid_parameters",
          "rate_limited": "rate_limit_exceeded"}
_TITLES = {400: "Invalid request", 403: "Forbidden", 413: "Payload too large", 415: "Unsupported media type",
           429: "Rate limit exceeded",
           500: "Internal error", 503: "Service unavailable"}


class RemoveBgError(ServiceError):
    """A request error in remove.bg's terms: ``code`` as remove.bg names it."""

    def __init__(self, status: int, code: str, detail: str):
        super().__init__(detail)
        self.status, self.code = status, code


def _errors(status: int, code: str, detail: str, headers: dict | None = None) -> Response:
    response = jsonify(errors=[{"title": _TITLES.get(status, "Error"), "code": code, "detail": detail}])
    response.status_code = status
    response.headers.update(headers or {})
    return response


answer_errors(bp, lambda exc: _errors(exc.status, _CODES.get(exc.code, exc.code), exc.message, exc.headers()))


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    return _errors(exc.code or 500, (exc.name or "error").lower().replace(" ", "_"), exc.description or exc.name)


def _invalid(detail: str) -> RemoveBgError:
    return RemoveBgError(400, "invalid_parameters", detail)


def _params() -> dict[str, str]:
    """The request's parameters from a JSON body, a form (multipart or urlencoded) or the query."""
    params = {k: str(v) for k, v in request.args.items()}
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise _invalid("the JSON body must be an object")
        params.update({k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in body.items()})
    else:
        params.update(request.form.items())
    return {k: v.strip() for k, v in params.items()}


def _image(params: dict[str, str], limit: int) -> bytes | None:
    """The photo's bytes from ``image_file`` or ``image_file_b64``; None for an ``image_url``,
    which is fetched only when the request's turn comes (:func:`_fetch`)."""
    upload = request.files.get("image_file")
    if (upload is not None) + bool(params.get("image_file_b64")) + bool(params.get("image_url")) > 1:
        raise _invalid("give one of image_file, image_file_b64 and image_url")
    if upload is not None:
        data = upload.stream.read(limit + 1)
    elif params.get("image_file_b64"):
        try:
            data = base64.b64decode(params["image_file_b64"], validate=True)
        except (binascii.Error, ValueError):
            raise _invalid("image_file_b64 is not valid base64") from None
    elif params.get("image_url"):
        _url_allowed("image_url")
        return None
    else:
        raise RemoveBgError(400, "missing_image", "no image given: send image_file or image_file_b64")
    if len(data) > limit:
        raise RemoveBgError(413, "file_too_large", f"the image is larger than {limit // 2**20} MB")
    if not data:
        raise RemoveBgError(400, "missing_image", "the image is empty")
    return data


def _url_allowed(field: str) -> None:
    if not current_settings().allow_image_url:
        raise _invalid(f"{field} is not enabled on this server (ALLOW_IMAGE_URL): send the image itself")


def _fetch(url: str, field: str, deadline: float) -> bytes:
    """The bytes at ``url`` (service/http/download.py), within the server's limits and this request's time."""
    settings = current_settings()
    timeout = min(settings.image_url_timeout, max(0.1, deadline - time.monotonic()))
    return download(url, settings.max_file_size, timeout, settings.image_url_networks, field)


def _shared(params: dict[str, str]) -> dict:
    """The Options of the fields /api/bg takes too (service/http/params.py), read under remove.bg's
    names as /api/bg reads them."""
    values = {}
    for param in TABLE:
        if param.removebg and param.option and params.get(param.removebg):
            try:
                values[param.name] = param.parse(params[param.removebg], REMOVEBG)
            except ServiceError as exc:
                raise _invalid(exc.message.replace(param.name, param.removebg, 1)) from None
    return options_of(values)


def _check(params: dict[str, str]) -> tuple[str, str, str, dict]:
    """(size, format, channels, the Options of the fields /api/bg takes too) from ``params``;
    refuses what this server can't honour."""
    if params.get("bg_image_url"):
        _url_allowed("bg_image_url")
        if request.files.get("bg_image_file") is not None or params.get("bg_color"):
            raise _invalid("give one of bg_color, bg_image_file and bg_image_url")
    for name, allowed in DEFAULT_ONLY.items():
        if name in params and params[name].lower() not in allowed:
            raise _invalid(f"{name}={params[name]!r} is not supported by this server (only {allowed[0]!r})")
    size = params.get("size", "auto").lower()
    if size not in SIZES:
        raise _invalid(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    fmt = params.get("format", "auto").lower()
    if fmt not in FORMATS:
        raise _invalid(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    channels = params.get("channels", "rgba").lower()
    if channels not in ("rgba", "alpha"):
        raise _invalid(f"channels must be rgba or alpha, got {channels!r}")
    if params.get("type", "auto").lower() not in TYPES:
        raise _invalid(f"type must be one of {', '.join(TYPES)}")
    shared = _shared(params)
    if fmt == "zip" and (channels == "alpha" or params.get("bg_color") or params.get("bg_image_url")
                         or request.files.get("bg_image_file") is not None):
        raise _invalid("format=zip is the cut-out's colours and alpha: it takes no background and "
                       "channels=rgba only")
    return size, fmt, channels, shared


def _shadow(params: dict[str, str], fmt: str, channels: str) -> dict:
    """The Options' shadow for ``shadow_type`` and the older ``add_shadow`` (a drop shadow,
    unless shadow_type names another)."""
    add = params.get("add_shadow", "false").lower()
    if add not in ("true", "false"):
        raise _invalid("add_shadow must be true or false")
    kind = params.get("shadow_type", "drop" if add == "true" else "none").lower()
    if kind in MODEL_SHADOWS:
        raise _invalid(f"shadow_type={params['shadow_type']!r} needs a model this server does not have; "
                       "use shadow_type=drop or contact")
    if kind not in SHADOW_TYPES:
        raise _invalid(f"shadow_type must be one of {', '.join(SHADOW_TYPES)}, got {params['shadow_type']!r}")
    if kind == "none":
        if "shadow_opacity" in params:
            raise _invalid("shadow_opacity needs a shadow: give shadow_type=drop or contact")
        return {}
    if channels == "alpha" or fmt == "zip":
        raise _invalid("a shadow is drawn on the cut-out: it takes channels=rgba and a png, jpg or webp answer")
    return {"shadow": kind}  # its opacity is read with the fields /api/bg takes too (:func:`_shared`)


def _placement(params: dict[str, str]) -> dict:
    """Options for ``roi``, ``scale`` and ``position``: as remove.bg, a scale without a position
    puts the subject in the centre."""
    scale, position = parse_scale(params.get("scale")), parse_position(params.get("position"))
    if scale is not None and "position" not in params:
        position = (0.5, 0.5)
    return {"roi": parse_roi(params.get("roi")), "scale": scale, "position": position}


def _output(size: str, max_output_pixels: int) -> dict:
    """The pipeline's output options for remove.bg's ``size``: a megapixel budget the photo is
    scaled down to; ``full`` and ``4k`` are the photo's own size, refused (413) over
    MAX_OUTPUT_PIXELS; ``auto``, the highest this server gives, scales down to it."""
    megapixels = SIZES[size]
    if megapixels is None:
        return {"output_pixels": max_output_pixels, "shrink_to_fit": size == "auto"}
    return {"output_pixels": min(int(megapixels * 1e6), max_output_pixels)}


def _box(mask: Image.Image) -> tuple[int, int, int, int]:
    """(top, left, width, height) of the pixels more opaque than not; zeros when there are none."""
    box = subject_box(mask)
    return (0, 0, 0, 0) if box is None else (box[1], box[0], box[2] - box[0], box[3] - box[1])


def _require_key() -> None:
    if not key_accepted():
        raise RemoveBgError(403, "auth_failed", "missing or wrong X-Api-Key header")


@bp.get("/account")
def account():
    """remove.bg's account call, with what is true here: nothing is bought or charged (every
    credit count is 0), and ``free_calls`` is what the key has left of its rate limit this minute,
    or UNLIMITED_CALLS for a key (or a server) without one."""
    _require_key()
    window = key_ring().peek(g.bg_key) if g.get("bg_key") is not None else None
    if window is not None:
        g.bg_window = window  # its X-RateLimit-* headers, as on every answer to a limited key
    return jsonify(data={"attributes": {
        "credits": {"total": 0, "subscription": 0, "payg": 0, "enterprise": 0},
        "api": {"free_calls": UNLIMITED_CALLS if window is None else window.remaining, "sizes": "all"}}})


@bp.post("/removebg")
def removebg():
    settings = current_settings()
    _require_key()
    count_request()
    started, deadline = time.perf_counter(), request_deadline()
    with admit_request(deadline, "image_file") as turn:
        params = _params()
        data = _image(params, settings.max_file_size)
        size, fmt, channels, shared = _check(params)
        under = background("bg_image_file", params.get("bg_color"), "png", "bg_color")
        # remove.bg's auto: a PNG where the answer has transparency, else a JPEG
        opaque = bool(params.get("bg_image_url")) or (
            under is not None and (isinstance(under, Image.Image) or len(under) == 3))
        kind = fmt if fmt != "auto" else ("jpg" if opaque and channels == "rgba" else "png")
        if kind == "jpg" and channels == "rgba" and not opaque:
            raise _invalid("format=jpg has no transparency: give bg_color or bg_image_file, or ask for png")
        options = Options(fmt="jpeg" if kind == "jpg" else kind, only_mask=channels == "alpha", background=under,
                          **shared, **_placement(params), **_output(size, settings.max_output_pixels),
                          **_shadow(params, kind, channels))
        with turn():  # downloads wait for the turn too: one image in memory beyond the queued uploads
            if data is None:
                data = _fetch(params["image_url"], "image_url", deadline)
            if params.get("bg_image_url"):
                picture = _fetch(params["bg_image_url"], "bg_image_url", deadline)
                options = replace(options, background=background_picture(picture))
            result = run_pipeline(data, options, deadline)
    image, body = result.image, result.body
    top, left, width, height = _box(result.mask)
    headers = {"X-Width": str(image.width), "X-Height": str(image.height), "X-Foreground-Top": str(top),
               "X-Foreground-Left": str(left), "X-Foreground-Width": str(width),
               "X-Foreground-Height": str(height), "X-Credits-Charged": "0",
               "X-Model-Used": result.model, **quality_headers(result),
               "X-Processing-Time-Ms": str(round((time.perf_counter() - started) * 1000))}
    if "application/json" in request.headers.get("Accept", ""):
        response = jsonify(data={"result_b64": base64.b64encode(body).decode("ascii"), "foreground_top": top,
                                 "foreground_left": left, "foreground_width": width, "foreground_height": height})
    else:
        response = Response(body, mimetype={"jpg": "image/jpeg", "zip": "application/zip"}.get(kind, f"image/{kind}"))
    response.headers.update(headers)
    return response
