"""What the HTTP APIs share over the one pipeline (service/pipeline.py): a request's options from
its form, its background, its admission, its deadline and its run. Beside it: the app's state
(state.py), reading uploads (uploads.py) and the answers (answers.py); the routes are api.py
(/api/bg), removebg.py (remove.bg's /v1.0), rembg_api.py, batch.py and jobs/api.py."""
from __future__ import annotations

import time

from flask import current_app, request
from PIL import Image
from werkzeug.exceptions import RequestEntityTooLarge

from ..errors import BadColor, BadRequest
from ..imaging.geometry import ALIGNMENTS, parse_canvas, parse_padding
from ..imaging.compose import COLOR_FORMS, Background, parse_color
from ..imaging.decode import decode_upload
from .params import BY_NAME, CHANGE_COLOR, options_of, read_form
from ..pipeline import Options, Result
from .requestlog import note
from .state import admission_gate, app_state, current_model, current_settings
from .uploads import form_field, read_file, screen_upload


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
