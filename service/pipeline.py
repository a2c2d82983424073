"""The one path from upload bytes to the encoded answer, walked by the API, remove.bg's API, the
CLI and eval.

``decode → predict (run, postprocess) → scale to the answer's size → refine → cut out → crop →
canvas → place → outline → shadow → compose (or blur) → encode``: each caller adds only its own
edge (an HTTP form, files on disk, a score table), so what the bench measures through the API is
what users of every entry point get.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from PIL import Image

from .imaging.confidence import mask_confidence
from .config import Settings
from .model.engines import Engine
from .imaging.effects import blurred_background, with_outline, with_shadow
from .errors import BadRequest, ImageTooLarge
from .imaging.decode import ANIMATED_FORMATS, Animation, Decoded, decode_upload, open_animation, shrink
from .imaging.compose import Background, combine_alpha, compose, cutout, encode, encode_animation
from .imaging.geometry import Length, clear_outside, crop_to_subject, fit_to_canvas, place_subject
from .imaging.matting import estimate_foreground, refine_mask


@dataclass(frozen=True)
class Options:
    """What the caller asks for.

    ``fmt``: "png", "webp" or "jpeg" (None: no encoding). ``only_mask``: the grey mask instead of
    the cut-out. ``refine``: edges fitted to the photo. ``hard_edges``: alpha 0 or 255 only.
    ``crop``: cut to the subject plus ``crop_margin`` (:func:`service.imaging.geometry.parse_margin`).
    ``roi``: the region that may hold the subject (:func:`service.imaging.geometry.parse_roi`; None: all).
    ``scale``, ``position``: the subject resized and moved on its canvas
    (:func:`service.imaging.geometry.place_subject`; None: as it is).
    ``background``: a colour or an image to put the subject on (None: transparent).
    ``output_pixels``: answer at the photo's own size, scaled down to at most this many pixels
    (None: at the size it is processed at, MAX_DIMENSION on the long side at most); with
    ``shrink_to_fit`` False a larger photo is refused (ImageTooLarge, 413) instead.
    ``canvas``: the answer as a (width, height) canvas, the subject fitted inside ``padding``
    (x, y pixels) and placed by ``align`` (:func:`service.imaging.geometry.fit_to_canvas`; None: no canvas).
    Drawn from the mask (:mod:`service.imaging.effects`): ``outline_width`` pixels of ``outline_color``
    round the subject (0: none); ``shadow``, "drop" or "contact", under it at ``shadow_opacity``
    (0–1; None: none); ``bg_blur``, the photo's own background blurred by this fraction of its
    long side instead of removed (0: removed).
    ``frames``: "all" answers an animated upload (GIF, WebP, APNG) with every frame cut out,
    animated (:func:`service.imaging.decode.open_animation`); "first": its first frame only.
    """
    fmt: str | None = "png"
    only_mask: bool = False
    refine: bool = False
    hard_edges: bool = False
    crop: bool = False
    crop_margin: tuple[Length, ...] = ((0.0, "px"),) * 4
    roi: tuple[Length, ...] | None = None
    scale: float | None = None
    position: tuple[float, float] | None = None
    background: Background | None = None
    output_pixels: int | None = None
    shrink_to_fit: bool = True
    canvas: tuple[int, int] | None = None
    padding: tuple[int, int] = (0, 0)
    align: tuple[float, float] = (0.5, 0.5)
    outline_width: int = 0
    outline_color: tuple[int, ...] = (255, 255, 255)
    shadow: str | None = None
    shadow_opacity: float = 0.5
    bg_blur: float = 0.0
    frames: str = "first"


@dataclass
class Result:
    decoded: Decoded
    mask: Image.Image          # mode L, the answer's alpha (cropped with it)
    image: Image.Image         # the answer before encoding: the mask, an RGBA cut-out or the composed photo
    body: bytes | None         # ``image`` encoded as Options.fmt
    model: str                 # the model that made the mask and how it ran (Engine.label)
    model_ms: float            # prediction and refinement
    confidence: float          # how far to trust the mask, 0–1 (service/imaging/confidence.py); an animation's lowest
    warning: str | None        # why the mask looks wrong, if it does
    frames: int = 1            # the answer's frames: more than one for an animation


def answer_long_side(original: tuple[int, int], pixels: int) -> int:
    """The long side of ``original`` (width, height) scaled down to at most ``pixels`` pixels."""
    width, height = original
    return max(1, math.floor(max(width, height) * min(1.0, math.sqrt(pixels / (width * height)))))


def cut_out(data: bytes, engine: Engine, settings: Settings, options: Options = Options(),
            deadline: float | None = None) -> Result:
    """Upload bytes → :class:`Result`. Raises the typed errors of decoding (4xx) and of the model
    run (TimedOut at ``deadline``, OutOfMemory, InferenceFailed). With ``options.frames`` "all",
    an animated upload gives an animated answer (:func:`_cut_out_animation`)."""
    if options.frames == "all":
        animation = open_animation(data, settings.max_pixels, settings.max_frames, settings.max_animation_pixels,
                                   settings.max_dimension)
        if animation is not None:
            return _cut_out_animation(animation, engine, options, deadline)
    decoded = decode_upload(data, settings.max_dimension, settings.max_pixels)
    started = time.perf_counter()
    mask = engine.predict_mask(decoded.rgb, deadline)
    model_ms = (time.perf_counter() - started) * 1000
    if options.output_pixels:
        width, height = decoded.original_size
        if width * height > options.output_pixels and not options.shrink_to_fit:
            raise ImageTooLarge(f"image is {width}×{height}; answers at its own size go up to "
                                f"{options.output_pixels:,} pixels (MAX_OUTPUT_PIXELS)")
        long_side = answer_long_side(decoded.original_size, options.output_pixels)
        if long_side > max(decoded.rgb.size):
            # decoded again at the answer's size, only now: the model's run never shares memory with it
            decoded = decode_upload(data, long_side, settings.max_pixels)
        elif long_side < max(decoded.rgb.size):
            decoded = shrink(decoded, long_side)
        mask = mask.resize(decoded.rgb.size, Image.Resampling.LANCZOS)
    image, mask, finish_ms, confidence, warning = _finish(decoded, mask, engine, options)
    body = encode(image, options.fmt) if options.fmt else None
    return Result(decoded, mask, image, body, engine.label, model_ms + finish_ms, confidence, warning)


def _finish(decoded: Decoded, mask: Image.Image, engine: Engine, options: Options
            ) -> tuple[Image.Image, Image.Image, float, float, str | None]:
    """The steps after the model, at the answer's size: refine, the upload's own alpha, roi,
    cut out, crop, canvas, place, outline, shadow, background. (image, mask, refine ms,
    confidence, warning)."""
    refine_ms = 0.0
    if options.refine:  # at the answer's size, in strips: a 12 MP answer's edges fitted to its own pixels
        started = time.perf_counter()
        mask = refine_mask(decoded.rgb, mask, engine.spec.input_size)
        refine_ms = (time.perf_counter() - started) * 1000
    mask = combine_alpha(mask, decoded.alpha)  # the upload's own transparency stays
    if options.roi:
        mask = clear_outside(mask, options.roi, decoded.original_size)
    confidence, warning = mask_confidence(mask)
    if options.hard_edges:
        mask = mask.point(lambda v: 255 if v >= 128 else 0)
    # soft edges take the subject's estimated colour, not the photo's (which mixes in the old background)
    image = mask if options.only_mask else cutout(estimate_foreground(decoded.rgb, mask), mask,
                                                   clear_hidden=options.fmt != "zip")
    if options.crop:
        image, mask = crop_to_subject(image, mask, options.crop_margin)
    if options.canvas:
        image, mask = fit_to_canvas(image, mask, options.canvas, options.padding, options.align)
    if options.scale or options.position:
        image, mask = place_subject(image, mask, options.scale, options.position)
    if not options.only_mask:
        if options.outline_width:
            image = with_outline(image, options.outline_width, options.outline_color)
        if options.shadow:  # the outline's shape, where there is one
            image = with_shadow(image, image.getchannel("A") if options.outline_width else mask,
                                options.shadow, options.shadow_opacity)
        if options.bg_blur:  # the frame is the photo's (no crop, canvas or placing: refused before)
            under = blurred_background(decoded.rgb, mask, options.bg_blur)
            under.paste(image, (0, 0), image)  # over an opaque layer: its alpha is the paste's mask
            image = under
        else:
            image = compose(image, options.background)
    return image, mask, refine_ms, confidence, warning


def _cut_out_animation(animation: Animation, engine: Engine, options: Options, deadline: float | None) -> Result:
    """Every frame of an animated upload cut out and finished as one still would be, at the
    processed size (MAX_DIMENSION at most), then written as one animation in ``options.fmt``
    with the upload's frame durations and loop count. The answers are held until the end (the
    encoders want every frame), within MAX_ANIMATION_PIXELS."""
    if options.crop or options.output_pixels:
        raise BadRequest("an animation is answered frame by frame at the processed size, every frame alike: "
                         "crop and size=full are for stills (send frames=first for the first frame alone)")
    if options.fmt not in ANIMATED_FORMATS:
        raise BadRequest(f"{options.fmt} has one frame: ask for {', '.join(ANIMATED_FORMATS)} for an animation, "
                         f"or send frames=first")
    frames, model_ms, first, confidence, warning = [], 0.0, None, 1.0, None
    for decoded in animation.frames():
        started = time.perf_counter()
        mask = engine.predict_mask(decoded.rgb, deadline)
        model_ms += (time.perf_counter() - started) * 1000
        image, mask, refine_ms, frame_confidence, frame_warning = _finish(decoded, mask, engine, options)
        model_ms += refine_ms
        first = first or (decoded, mask)
        confidence, warning = min(confidence, frame_confidence), warning or frame_warning
        frames.append(image)
    body = encode_animation(frames, animation.durations, animation.loop, options.fmt)
    return Result(first[0], first[1], frames[0], body, engine.label, model_ms, confidence, warning,
                  frames=len(frames))
