"""What the HTTP APIs share over the one pipeline (service/pipeline.py): the app's parts
(settings, engine, admission gate), the API key, reading uploads and options from a form,
backgrounds and effects, admission, running the pipeline and the image answer. The routes live
beside it: api.py (/api/bg), removebg.py (remove.bg's /v1.0), batch.py, jobs/api.py."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Callable

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from PIL import Image
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, File, MultipartDecoder, NeedData

from ..config import Settings
from ..model.engines import Engine
from ..errors import BadColor, BadRequest, FileTooLarge, MissingFile, ServiceError, Unauthorized, memory_exhausted
from .gate import AdmissionGate
from .keys import KeyRing
from .metrics import Metrics
from ..imaging.geometry import ALIGNMENTS, parse_canvas, parse_padding
from ..imaging.compose import COLOR_FORMS, Background, parse_color
from ..imaging.decode import check_header, decode_upload
from ..model.holder import ModelHolder
from .params import BY_NAME, CHANGE_COLOR, options_of, read_form
from ..pipeline import Options, Result
from .requestlog import note
from ..model.sizing import Plan

log = logging.getLogger(__name__)


STATE = "bg_removal"  # where create_app keeps the AppState in app.extensions


@dataclass
class AppState:
    """What a running app holds, as one typed object (``app.extensions[STATE]``), made by
    :func:`service.create_app`: the settings, the model, the worker's plan, the admission gate,
    the metrics, the API keys, whether SIGTERM has come, and the job system once a job route
    has connected it."""
    settings: Settings
    model: ModelHolder
    plan: Plan
    gate: AdmissionGate
    metrics: Metrics
    keys: KeyRing
    draining: threading.Event = field(default_factory=threading.Event)  # set at SIGTERM (service/http/server.py)
    jobs: object | None = None  # service.jobs.Jobs, connected at the first job request (jobs/api.py)


def app_state(app: Flask | None = None) -> AppState:
    """The AppState of ``app`` (default: the app of the request being served)."""
    return (app or current_app).extensions[STATE]


def current_settings() -> Settings:
    return app_state().settings


def current_model() -> ModelHolder:
    return app_state().model


def current_engine() -> Engine:
    return current_model().engine


def admission_gate() -> AdmissionGate:
    return app_state().gate


def key_ring() -> KeyRing:
    return app_state().keys


def key_accepted() -> bool:
    """True when the server has no API keys, or the request's X-API-Key header (any case:
    remove.bg clients write X-Api-Key) carries one of them (service/http/keys.py); the key's index is
    kept for the request (``g.bg_key``)."""
    ring = key_ring()
    if not ring.required:
        return True
    g.bg_key = ring.match(request.headers.get("X-API-Key"))
    return g.bg_key is not None


def count_request() -> None:
    """Count this request against its key's limit: RateLimited (429) past it. The key's window
    goes on the answer as X-RateLimit-* headers (:func:`rate_limit_headers`)."""
    if g.get("bg_key") is not None:
        g.bg_window = key_ring().take(g.bg_key)


def rate_limit_headers(response: Response) -> Response:
    """After every request: the X-RateLimit-* headers of the key it counted against, if limited."""
    window = g.get("bg_window")
    if window is not None:
        response.headers.update(window.headers())
    return response


def require_api_key():
    """With API keys set, every POST under /api/bg needs one in X-API-Key, and counts against
    its limit."""
    if request.method == "POST":
        if not key_accepted():
            raise Unauthorized("missing or wrong X-API-Key header")
        count_request()


def read_file(upload, field: str) -> bytes:
    """An uploaded file's bytes, at most MAX_FILE_SIZE_MB (413 beyond), not empty (400)."""
    data = upload.stream.read(current_settings().max_file_size + 1)
    if len(data) > current_settings().max_file_size:
        raise FileTooLarge(f"upload is larger than {current_settings().max_file_size_mb} MB")
    if not data:
        raise MissingFile(f"the uploaded {field} is empty")
    return data


def background_picture(data: bytes) -> Image.Image:
    """A background image's bytes, decoded and checked like a photo (at most MAX_DIMENSION)."""
    settings = current_settings()
    return decode_upload(data, settings.max_dimension, settings.max_pixels).rgb


def background(image_field: str, color: str | None, fmt: str, color_field: str = "color") -> Background | None:
    """The background asked for: an uploaded image (decoded like the photo), a colour
    (:func:`parse_color`; None for transparent), or None when neither is given. Refuses
    transparency where ``fmt`` has none."""
    upload = request.files.get(image_field)
    if upload is not None and color:
        raise BadRequest(f"give a colour or {image_field}, not both")
    if upload is not None:
        return background_picture(read_file(upload, image_field))
    if not color:
        return None
    try:
        value = parse_color(color)
    except BadColor as exc:
        raise BadColor(f"{color_field}: {exc.message}") from None
    if fmt == "jpeg" and (value is None or len(value) == 4):
        raise BadColor(f"{color_field}: JPEG has no transparency for {color!r}; ask for PNG or WebP")
    return value


def uploaded_file() -> tuple[bytes, str]:
    """The ``file`` field's bytes and a safe stem for the download name."""
    upload = request.files.get("file")
    if upload is None:
        raise MissingFile("no file: send the image as multipart form field 'file'")
    return read_file(upload, "file"), safe_stem(upload.filename)


def safe_stem(filename: str | None) -> str:
    """A file name's stem fit for a download name. The name is only echoed back (in
    Content-Disposition, or as a batch's entry name), never used as a path; HTTP headers are
    Latin-1: anything but ASCII letters, digits and -_. is dropped."""
    stem = PurePosixPath((filename or "image").replace("\\", "/")).stem
    return "".join(c for c in stem if c.isascii() and (c.isalnum() or c in "-_."))[:100] or "image"


def form_field(name: str) -> str | None:
    """A request option, from the multipart form or else the query string."""
    return request.form.get(name) or request.args.get(name)


def image_response(result: Result, fmt: str, filename: str, started: float) -> Response:
    response = Response(result.body, mimetype=f"image/{fmt}")
    response.headers.update(quality_headers(result))
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["X-Model-Used"] = result.model
    if result.frames > 1:
        response.headers["X-Frames"] = str(result.frames)
    response.headers["X-Processing-Time-Ms"] = str(round((time.perf_counter() - started) * 1000))
    return response


def request_deadline() -> float:
    """When this request's time is up, as a time.monotonic() value: REQUEST_TIMEOUT_S from now."""
    return time.monotonic() + current_settings().request_timeout


def run_pipeline(data: bytes, options: Options, deadline: float) -> Result:
    """The pipeline's answer for this upload; notes pixels, mask time and confidence for the log
    line. A run that fails for memory is retried once on the fallback model, where allowed
    (:meth:`service.model.holder.ModelHolder.cut_out`)."""
    result = current_model().cut_out(data, options, deadline)
    note(pixels=result.decoded.rgb.width * result.decoded.rgb.height, model_ms=round(result.model_ms, 1),
         confidence=round(result.confidence, 3), model=result.model)
    app_state().metrics.model_run.observe(result.model_ms / 1000)
    return result


def quality_headers(result: Result) -> dict[str, str]:
    """X-Mask-Confidence, and X-Mask-Warning where the mask looks wrong (service/imaging/confidence.py)."""
    headers = {"X-Mask-Confidence": f"{result.confidence:.3f}"}
    if result.warning:
        headers["X-Mask-Warning"] = result.warning
    return headers


# What a refused upload may have read of it to settle its type and declared size: headers sit
# in the first bytes of every allowed format (a JPEG's may follow up to 64 KB of EXIF).
SCREEN_BYTES = 256 * 1024


def screen_upload(field: str) -> None:
    """Raise the 4xx the first SCREEN_BYTES of the multipart file ``field`` settle, if any
    (:func:`service.imaging.decode.check_header`): read from the body as it streams, the rest left
    unread. For a request about to be refused as busy, which is then refused for what it is."""
    mimetype, options = parse_options_header(request.headers.get("Content-Type", ""))
    if mimetype != "multipart/form-data" or not options.get("boundary"):
        return
    decoder, stream = MultipartDecoder(options["boundary"].encode("latin-1")), request.stream
    head, inside, complete = bytearray(), False, False
    while not complete and len(head) < SCREEN_BYTES:
        chunk = stream.read(64 * 1024)
        decoder.receive_data(chunk or None)
        try:
            event = decoder.next_event()
            while not isinstance(event, (NeedData, Epilogue)) and not complete:
                if isinstance(event, File):
                    inside = event.name == field
                elif isinstance(event, Data) and inside:
                    head += event.data
                    complete = not event.more_data
                event = decoder.next_event()
        except ValueError:  # a malformed body: the refusal stands
            return
        if not chunk or isinstance(event, Epilogue):
            break
    if head:
        settings = current_settings()
        check_header(bytes(head[:SCREEN_BYTES]), complete and len(head) <= SCREEN_BYTES, settings.max_pixels)


def form_values(api: str) -> dict:
    """The request's fields for ``api`` (service/http/params.py), from the multipart form or else the
    query string, each read and checked; an empty field counts as not given."""
    texts = {name: value for name, value in request.args.items() if value}
    texts.update({name: value for name, value in request.form.items() if value})
    return read_form(api, texts, [name for name in request.files if name not in texts])


def form_options(api: str) -> Options:
    """The pipeline's Options from the form of /api/bg/remove, /api/bg/change_color, a batch or a
    job (``api``). What maps onto one option comes from the table (service/http/params.py); here is
    what takes several fields or the settings: the background, the canvas, the answer's size."""
    values = form_values(api)
    fields = {"frames": "all", **options_of(values)}
    fmt = fields["fmt"] = values.get("format") or BY_NAME["format"].schema_for(api)["default"]
    if fields.get("only_mask") and fmt == "avif":
        raise BadRequest("AVIF is lossy, and every level of a mask is data: ask for png or webp with only_mask")
    under = background("bg_image_file", form_field("color"), fmt)
    if api == CHANGE_COLOR and "color" not in values and under is None and not fields.get("bg_blur"):
        raise BadColor(f"missing colour: give color as {COLOR_FORMS}, a bg_image_file or bg_blur")
    canvas = parse_canvas(values.get("output_size"), current_settings().max_output_pixels)
    if canvas:
        fields.update(canvas=canvas, padding=parse_padding(values.get("padding"), canvas),
                      align=tuple(ALIGNMENTS[name][values.get(name, "center")] for name in ALIGNMENTS))
    if values.get("size") == "full":
        fields.update(output_pixels=current_settings().max_output_pixels, shrink_to_fit=False)
    # a canvas is filled from the cut-out at the size ``size`` asks for (the default's, scaled up
    # to a larger canvas; size=full: the photo's own): its memory stays that size's
    return Options(background=under, **fields)


def admit_request(deadline: float, field: str = "file"):
    """Enter the admission gate with this request's declared body size, before the body is read
    (503 at once when the waiting uploads or the expected wait are over their limits). An upload
    refused so is first screened (:func:`screen_upload`): what its first bytes show to be wrong
    gets its 4xx, not the 503, on a busy server as on an idle one."""
    size = request.content_length or 0
    if size > current_app.config["MAX_CONTENT_LENGTH"]:
        raise RequestEntityTooLarge()  # answered (after draining the body) by the error handler
    reason = admission_gate().refusal(size, deadline)
    if reason:
        screen_upload(field)
        raise admission_gate().refuse(reason)  # even if a turn came free meanwhile: the body is part-read
    return admission_gate().admit(size, deadline)


# The answers to errors, in one place for every API.

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
