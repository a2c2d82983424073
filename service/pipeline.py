"""The one path from upload bytes to the encoded answer, walked by the API, the CLI and eval.

``decode → predict (run, postprocess, refine) → compose → encode``: each caller adds only its
own edge (an HTTP form, files on disk, a score table), so what the bench measures through the
API is what users of every entry point get.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from PIL import Image

from .config import Settings
from .engine import Engine
from .imaging import Decoded, decode_upload, encode
from .matting import subject_image


@dataclass(frozen=True)
class Options:
    """What the caller asks for: ``fmt`` "png", "webp" or "jpeg" (None: no encoding), the mask
    alone, refined edges, and a background colour (None: transparent)."""
    fmt: str | None = "png"
    only_mask: bool = False
    refine: bool = False
    color: tuple[int, int, int] | None = None


@dataclass
class Result:
    decoded: Decoded
    mask: Image.Image          # mode L, the cut-out's alpha
    image: Image.Image         # the answer before encoding: the mask, an RGBA cut-out or RGB on a colour
    body: bytes | None         # ``image`` encoded as Options.fmt
    model_ms: float            # prediction and refinement


def cut_out(data: bytes, engine: Engine, settings: Settings, options: Options = Options(),
            deadline: float | None = None) -> Result:
    """Upload bytes → :class:`Result`. Raises the typed errors of decoding (4xx) and of the model
    run (TimedOut at ``deadline``, InferenceFailed)."""
    decoded = decode_upload(data, settings.max_dimension, settings.max_pixels)
    started = time.perf_counter()
    mask = engine.predict_alpha(decoded, options.refine, deadline)
    model_ms = (time.perf_counter() - started) * 1000
    image = mask if options.only_mask else subject_image(decoded.rgb, mask, options.color)
    body = encode(image, options.fmt) if options.fmt else None
    return Result(decoded, mask, image, body, model_ms)
