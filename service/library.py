"""rembg's library call, so that a script written for rembg runs with its import line changed:
``from service import remove, new_session``.

:func:`remove` takes what rembg's takes (bytes, a PIL image or a numpy array) and answers in the
same kind: PNG bytes, an RGBA (or, with ``only_mask``, an L) image, an H×W×4 (or H×W) uint8 array,
at the photo's own size. It runs the server's pipeline (:func:`service.pipeline.cut_out`) on the
engine and precision the server would choose on this machine, after the same memory check.

Where it differs from rembg (docs/rembg.md):
- ``session=None`` runs the configured model (BG_REMOVAL_MODEL, isnet-general-tiny by default),
  not rembg's u2net, and ``new_session()`` without a name does the same;
- ``alpha_matting`` is this project's edge refinement (``refine=true``: a guided filter fitted to the
  photo), not pymatting's closed-form matting; its three thresholds are accepted and unused;
- soft edges carry the subject's estimated colour, not the photo's (no halo of the old background);
- photos over MAX_OUTPUT_PIXELS (12 MP) are answered scaled down to it, as the server's size=full;
- ``bgcolor`` is composed under the cut-out, so an opaque colour gives an opaque answer (rembg
  pastes the cut-out over it, which leaves its soft edges part see-through).
"""
from __future__ import annotations

import functools
import io
from dataclasses import replace
from typing import Any

import numpy as np
from PIL import Image, ImageFilter, ImageOps

# rembg's names for models this catalog holds under another name
REMBG_NAMES = {"isnet-general-use": "isnet-general-tiny"}


class Session:
    """A model loaded once (rembg's session): its engine, chosen and checked as the server's is."""

    def __init__(self, model_name: str | None = None, settings=None):
        from .config import Settings
        from .model.holder import load_engine

        settings = settings or Settings.from_env()
        name = REMBG_NAMES.get(model_name, model_name) or settings.model
        servable = servable_models()
        if name not in servable:
            rembg = ", ".join(f"{theirs} (as {ours})" for theirs, ours in REMBG_NAMES.items())
            raise ValueError(f"no model {model_name!r} here: new_session takes {rembg}, and "
                             f"{', '.join(sorted(servable - set(REMBG_NAMES)))}")
        self.model_name = model_name or name
        self.settings = replace(settings, model=name)
        self.engine = load_engine(name, self.settings)

    def __repr__(self) -> str:
        return f"Session({self.model_name!r}: {self.engine.label})"


def servable_models() -> set[str]:
    """The catalog's models a session can serve: every row but the builds made for another."""
    from .model.catalog import CATALOG

    builds = {name for spec in CATALOG.values() for name in (spec.openvino, spec.int8, spec.gpu) if name}
    return {name for name, spec in CATALOG.items() if name not in builds and not name.endswith("-rembg")}


def new_session(model_name: str | None = None, providers: Any = None, *args, **kwargs) -> Session:
    """rembg's ``new_session``: ``model_name`` as rembg names it (``isnet-general-use``,
    ``u2netp``, …) or as this catalog does; None for the configured model. ``providers`` and
    the rest are rembg's ONNX Runtime options: the engine and device here are chosen as the
    server's are (BG_REMOVAL_ENGINE, BG_REMOVAL_DEVICE). Raises ValueError for a model this
    service cannot serve, naming those it can."""
    return Session(model_name)


@functools.cache
def _default_session() -> Session:
    return Session()


def post_process(mask: Image.Image) -> Image.Image:
    """rembg's ``post_process_mask``: the mask opened (specks and hairlines gone; by a 3×3 square,
    where rembg's OpenCV kernel is a 3×3 cross), blurred (σ 2), then cut at 127 into 0 or 255."""
    opened = mask.filter(ImageFilter.MinFilter(3)).filter(ImageFilter.MaxFilter(3))
    return opened.filter(ImageFilter.GaussianBlur(2)).point(lambda v: 255 if v >= 127 else 0)


def remove(data, alpha_matting: bool = False, alpha_matting_foreground_threshold: int = 240,
           alpha_matting_background_threshold: int = 10, alpha_matting_erode_size: int = 10,
           session: Session | None = None, only_mask: bool = False, post_process_mask: bool = False,
           bgcolor: tuple[int, int, int, int] | None = None, force_return_bytes: bool = False, *args, **kwargs):
    """rembg's ``remove``: the subject of ``data`` cut out (or its mask, ``only_mask``), on
    ``bgcolor`` (R, G, B, A) where given, in the kind ``data`` came in (``force_return_bytes``:
    PNG bytes whatever it was). Raises ValueError for another kind of input, and the server's
    typed errors (service/errors.py) for bytes that are no image."""
    from .pipeline import Options, cut_out

    if isinstance(data, (bytes, bytearray)):
        kind, raw = "bytes", bytes(data)
    elif isinstance(data, Image.Image):
        kind, raw = "pil", png(ImageOps.exif_transpose(data))
    elif isinstance(data, np.ndarray):
        kind, raw = "array", png(Image.fromarray(data))
    else:
        raise ValueError(f"Input type {type(data)} is not supported.")
    session = session or _default_session()
    options = Options(fmt=None, only_mask=only_mask, refine=alpha_matting,
                      output_pixels=session.settings.max_output_pixels, frames="first")
    image = finish(cut_out(raw, session.engine, session.settings, options), only_mask, post_process_mask, bgcolor)
    if kind == "bytes" or force_return_bytes:
        return png(image)
    return image if kind == "pil" else np.asarray(image)


def finish(result, only_mask: bool, post_process_mask: bool, bgcolor: tuple[int, ...] | None) -> Image.Image:
    """A pipeline :class:`service.pipeline.Result` as rembg answers it: the mask post-processed
    where asked (the cut-out made again from it), composed over ``bgcolor`` where given."""
    from .imaging.compose import cutout
    from .imaging.matting import estimate_foreground

    image = result.image
    if post_process_mask:
        mask = post_process(result.mask)
        image = mask if only_mask else cutout(estimate_foreground(result.decoded.rgb, mask), mask)
    if bgcolor is not None and not only_mask:  # composed over it (rembg pastes, which leaves soft edges see-through)
        image = Image.alpha_composite(Image.new("RGBA", image.size, tuple(bgcolor)), image)
    return image


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()
