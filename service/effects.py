"""What product photos get after the cut-out: shadows drawn from the mask (no model).

A shadow is a blurred, offset (drop) or flattened (contact) copy of the subject's alpha, tinted
black at ``opacity``, put under the cut-out. It is drawn at most SHADOW_SIDE pixels on its long
side and scaled up (a shadow has no detail to lose), so its cost and memory stay those of a
1 MP layer whatever the photo's size, plus one alpha composite at the answer's size.
"""
from __future__ import annotations

from PIL import Image, ImageFilter

from .imaging import subject_box

SHADOWS = ("drop", "contact")
SHADOW_SIDE = 1024


def shadow_alpha(mask: Image.Image, kind: str, opacity: float) -> Image.Image | None:
    """The shadow's alpha (mode L, ``mask``'s size) for the subject in ``mask``; None when the
    mask holds no subject."""
    box = subject_box(mask)
    if box is None:
        return None
    scale = min(1.0, SHADOW_SIDE / max(mask.size))
    small = (max(1, round(mask.width * scale)), max(1, round(mask.height * scale)))
    sub = mask.resize(small, Image.Resampling.BILINEAR) if scale < 1 else mask
    left, top, right, bottom = (round(v * scale) for v in box)
    width, height = max(1, right - left), max(1, bottom - top)
    layer = Image.new("L", small, 0)
    if kind == "drop":  # the subject's own outline, down and to the right, softened
        size = max(width, height)
        layer.paste(sub, (round(0.02 * size), round(0.03 * size)))
        layer = layer.filter(ImageFilter.GaussianBlur(max(1.0, 0.02 * size)))
    elif kind == "contact":  # the subject's footprint, flattened onto the ground at its base
        flat = max(2, round(0.06 * height))
        footprint = sub.crop((left, top, left + width, top + height)).resize((width, flat), Image.Resampling.BOX)
        layer.paste(footprint, (left, bottom - flat // 2))
        layer = layer.filter(ImageFilter.GaussianBlur(max(1.0, 0.03 * width)))
    else:
        raise ValueError(f"unknown shadow {kind!r}")
    layer = layer.point(lambda v: round(v * opacity))
    return layer.resize(mask.size, Image.Resampling.BILINEAR) if scale < 1 else layer


def with_shadow(cut: Image.Image, mask: Image.Image, kind: str, opacity: float) -> Image.Image:
    """The RGBA ``cut`` over its subject's shadow (``kind``, ``opacity`` 0–1); unchanged without
    a subject."""
    alpha = shadow_alpha(mask, kind, opacity)
    if alpha is None:
        return cut
    shadow = Image.new("RGBA", cut.size, (0, 0, 0, 0))
    shadow.putalpha(alpha)
    del alpha
    return Image.alpha_composite(shadow, cut)
