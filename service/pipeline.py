"""The one path from upload bytes to the encoded answer, walked by the API, remove.bg's API, the
CLI and eval.

``decode → predict (run, postprocess, refine) → cut out → crop → compose → encode``: each caller
adds only its own edge (an HTTP form, files on disk, a score table), so what the bench measures
through the API is what users of every entry point get.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from PIL import Image

from .confidence import mask_confidence
from .config import Settings
from .engine import Engine
from .imaging import Background, Decoded, compose, crop_to_subject, cutout, decode_upload, encode
from .matting import estimate_foreground


@dataclass(frozen=True)
class Options:
    """What the caller asks for.

    ``fmt``: "png", "webp" or "jpeg" (None: no encoding). ``only_mask``: the grey mask instead of
    the cut-out. ``refine``: edges fitted to the photo. ``hard_edges``: alpha 0 or 255 only.
    ``crop``: cut to the subject plus ``crop_margin`` (:func:`service.imaging.parse_margin`).
    ``background``: a colour or an image to put the subject on (None: transparent).
    """
    fmt: str | None = "png"
    only_mask: bool = False
    refine: bool = False
    hard_edges: bool = False
    crop: bool = False
    crop_margin: tuple[tuple[float, str], ...] = ((0.0, "px"),) * 4
    background: Background | None = None


@dataclass
class Result:
    decoded: Decoded
    mask: Image.Image          # mode L, the answer's alpha (cropped with it)
    image: Image.Image         # the answer before encoding: the mask, an RGBA cut-out or the composed photo
    body: bytes | None         # ``image`` encoded as Options.fmt
    model_ms: float            # prediction and refinement
    confidence: float          # how far to trust the mask, 0–1 (service/confidence.py)
    warning: str | None        # why the mask looks wrong, if it does


def cut_out(data: bytes, engine: Engine, settings: Settings, options: Options = Options(),
            deadline: float | None = None) -> Result:
    """Upload bytes → :class:`Result`. Raises the typed errors of decoding (4xx) and of the model
    run (TimedOut at ``deadline``, InferenceFailed)."""
    decoded = decode_upload(data, settings.max_dimension, settings.max_pixels)
    started = time.perf_counter()
    mask = engine.predict_alpha(decoded, options.refine, deadline)
    model_ms = (time.perf_counter() - started) * 1000
    confidence, warning = mask_confidence(mask)
    if options.hard_edges:
        mask = mask.point(lambda v: 255 if v >= 128 else 0)
    # soft edges take the subject's estimated colour, not the photo's (which mixes in the old background)
    image = mask if options.only_mask else cutout(estimate_foreground(decoded.rgb, mask), mask)
    if options.crop:
        image, mask = crop_to_subject(image, mask, options.crop_margin)
    if not options.only_mask:
        image = compose(image, options.background)
    body = encode(image, options.fmt) if options.fmt else None
    return Result(decoded, mask, image, body, model_ms, confidence, warning)
