"""What product photos get after the cut-out, drawn from the mask with no model: shadows,
outlines (a sticker's border) and the photo's own background blurred.

A shadow is a blurred, offset (drop) or flattened (contact) copy of the subject's alpha, tinted
black at ``opacity``, put under the cut-out. It is drawn at most SHADOW_SIDE pixels on its long
side and scaled up (a shadow has no detail to lose), so its cost and memory stay those of a
1 MP layer whatever the photo's size, plus one alpha composite at the answer's size.
"""
from __future__ import annotations

from PIL import Image, ImageFilter, ImageOps, ImageStat

from .geometry import subject_box

SHADOWS = ("drop", "contact")
SHADOW_SIDE = 1024
BLUR_SIDE = 1536
OUTLINE_MAX = 200  # px, the widest border asked for
BLUR_MAX = 0.1  # of the long side, the strongest blur asked for


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


def _soft_threshold(width: float) -> list[int]:
    """A lookup table for an alpha blurred with sigma ``width``/2 that keeps what lies within
    about ``width`` of the subject: ½·erfc(√2·d/width) is 5.8/255 at d = width, 14 at 0.8·width
    and 2 at 1.2·width, so levels 2–14 ramp from 0 to 255 (an anti-aliased edge)."""
    low, high = 2, 14 if width >= 2 else 40  # a 1-px outline: sigma 0.5 keeps less of the tail
    return [0 if v <= low else 255 if v >= high else round(255 * (v - low) / (high - low)) for v in range(256)]


def with_outline(cut: Image.Image, width: int, color: tuple[int, ...]) -> Image.Image:
    """The RGBA ``cut`` on a border ``width`` pixels wide around its subject, of ``color`` (a
    sticker's): the alpha's opaque half widened by a gaussian blur and a threshold, so that
    corners come out round. Three mode-L layers of the cut's size at work, whatever the width."""
    solid = cut.getchannel("A").point(lambda v: 255 if v >= 128 else 0)
    if solid.getbbox() is None:
        return cut
    grown = solid.filter(ImageFilter.GaussianBlur(width / 2)).point(_soft_threshold(width))
    del solid
    border = Image.new("RGBA", cut.size, (*color[:3], 255))
    if len(color) == 4 and color[3] < 255:
        grown = grown.point(lambda v: v * color[3] // 255)
    border.putalpha(grown)
    del grown
    return Image.alpha_composite(border, cut)


def blurred_background(rgb: Image.Image, mask: Image.Image, radius: float) -> Image.Image:
    """The photo's own background (where ``mask`` is not the subject) blurred with a gaussian of
    ``radius`` (a fraction of the long side), as an RGB image of ``rgb``'s size. The subject's
    colours are left out of the blur (a premultiplied blur weighted by 1 − mask), so no halo of
    them spreads round it. Made at most BLUR_SIDE on its long side and scaled up: a blur keeps no
    detail worth the pixels."""
    scale = min(1.0, BLUR_SIDE / max(rgb.size))
    small = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    layer = rgb.resize(small, Image.Resampling.BOX) if scale < 1 else rgb.copy()
    layer.putalpha(ImageOps.invert(mask.resize(small, Image.Resampling.BOX) if scale < 1 else mask))
    sigma = max(0.5, radius * max(small))
    layer = layer.convert("RGBa").filter(ImageFilter.GaussianBlur(sigma)).convert("RGBA")
    # where no background reached (deep inside a large subject) the colour is undefined: the
    # subject covers it, and the mean background colour stands in for a soft edge
    seen = layer.getchannel("A").point(lambda v: 255 if v > 0 else 0)
    filler = Image.new("RGB", small, tuple(round(c) for c in ImageStat.Stat(layer.convert("RGB"), seen).mean)
                       if seen.getbbox() else (128, 128, 128))
    filler.paste(layer.convert("RGB"), mask=seen)
    return filler.resize(rgb.size, Image.Resampling.BILINEAR) if scale < 1 else filler
