"""Where the subject is and where it goes: its box (:func:`main_box`), crops and margins, the
region of interest, scale and position, canvases with padding and alignment."""
from __future__ import annotations

import re

from PIL import Image

from ..errors import BadRequest, ImageTooLarge

# Mask levels this close to 0 or 255 count as certain (background, subject): networks leave a
# faint haze over much of a photo, which is no part of the subject.
CERTAIN_LEVEL = 5
_MARGIN = re.compile(r"^(\d+(?:\.\d+)?)(px|%)?$")
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")
# remove.bg's limits on a crop margin, per side: half the subject's extent, and 500 px.
MARGIN_MAX_SHARE, MARGIN_MAX_PX = 0.5, 500


Length = tuple[float, str]  # (value, "px" or "%")


def _lengths(text: str, name: str) -> list[Length]:
    """Space-separated ``N``/``Npx``/``N%`` values → [(value, unit)]. Raises BadRequest."""
    values = []
    for part in text.split():
        match = _MARGIN.match(part.strip().lower())
        if not match:
            raise BadRequest(f"{name} values are like 30px or 10%, got {part!r}")
        values.append((float(match.group(1)), match.group(2) or "px"))
    return values


def parse_margin(text: str | None) -> tuple[Length, ...]:
    """remove.bg's ``crop_margin``: one, two or four values (CSS order: top, right, bottom, left),
    each ``N``/``Npx`` or ``N%`` of the subject's size → four (value, unit). Raises BadRequest."""
    values = _lengths(text or "0", "crop_margin")
    if len(values) not in (1, 2, 4):
        raise BadRequest("crop_margin takes one, two or four values")
    top, right = values[0], values[1] if len(values) > 1 else values[0]
    bottom, left = (values[2], values[3]) if len(values) == 4 else (top, right)
    return top, right, bottom, left


def subject_box(mask: Image.Image, threshold: int = 128) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the mask's pixels at or above ``threshold``; None if none."""
    return mask.point(lambda v: 255 if v >= threshold else 0).getbbox()


# The subject's box, as crop, canvas and placing measure it: the box of its pixels at least
# SOLID_LEVEL (half opaque), widened by its softer pixels (hair, fur, soft edges) of at least
# FAINT_LEVEL that lie within REACH of that box (a share of the photo's long side). Fainter haze,
# and soft specks further away (a face in the crowd at alpha 6), leave it as it is. Chosen by
# measurement on the sample photos (docs/effects.md, "The subject's box").
SOLID_LEVEL, FAINT_LEVEL, REACH = 128, 32, 0.005


def main_box(mask: Image.Image) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the subject in ``mask`` (SOLID_LEVEL, FAINT_LEVEL, REACH);
    where no pixel is half opaque (a subject all see-through), the box of every pixel above
    CERTAIN_LEVEL. None for an empty mask."""
    solid = subject_box(mask, SOLID_LEVEL)
    if solid is None:
        return subject_box(mask, CERTAIN_LEVEL + 1)
    reach = round(REACH * max(mask.size))
    near = (max(0, solid[0] - reach), max(0, solid[1] - reach), min(mask.width, solid[2] + reach),
            min(mask.height, solid[3] + reach))
    soft = subject_box(mask.crop(near), FAINT_LEVEL)
    if soft is None:
        return solid
    return (min(solid[0], near[0] + soft[0]), min(solid[1], near[1] + soft[1]),
            max(solid[2], near[0] + soft[2]), max(solid[3], near[1] + soft[3]))


def crop_to_subject(image: Image.Image, mask: Image.Image, margin: tuple[Length, ...]
                    ) -> tuple[Image.Image, Image.Image]:
    """``image`` and ``mask`` cut to the subject (:func:`main_box`) plus ``margin`` (from
    :func:`parse_margin`), padded with transparency (the mask with 0) where the margin passes the
    edge. An empty mask leaves both as they are."""
    box = main_box(mask)
    if box is None:
        return image, mask
    width, height = box[2] - box[0], box[3] - box[1]

    def side(value: tuple[float, str], extent: int) -> int:
        pixels = value[0] * extent / 100 if value[1] == "%" else value[0]
        return int(round(min(pixels, MARGIN_MAX_SHARE * extent, MARGIN_MAX_PX)))

    top, right, bottom, left = (side(v, e) for v, e in zip(margin, (height, width, height, width)))
    box = (box[0] - left, box[1] - top, box[2] + right, box[3] + bottom)
    return image.crop(box), mask.crop(box)


def parse_roi(text: str | None) -> tuple[Length, ...] | None:
    """remove.bg's ``roi``, the region that may hold the subject: ``x1 y1 x2 y2``, each in px of
    the photo or % of its width or height → four (value, unit); None for the whole photo."""
    if not text or not text.strip():
        return None
    values = _lengths(text, "roi")
    if len(values) != 4:
        raise BadRequest(f"roi takes four values, x1 y1 x2 y2 (like 0% 0% 100% 100%), got {text!r}")
    if any(unit == "%" and value > 100 for value, unit in values):
        raise BadRequest(f"roi percentages go from 0% to 100%, got {text!r}")
    return None if values == [(0.0, "%"), (0.0, "%"), (100.0, "%"), (100.0, "%")] else tuple(values)


def clear_outside(mask: Image.Image, roi: tuple[Length, ...], photo_size: tuple[int, int]) -> Image.Image:
    """``mask`` with every pixel outside ``roi`` (from :func:`parse_roi`; px are pixels of a photo
    of ``photo_size``, whatever the mask's own size) set to 0. Raises BadRequest for an empty region."""
    fractions = [value / 100 if unit == "%" else value / photo_size[i % 2]
                 for i, (value, unit) in enumerate(roi)]
    left, top, right, bottom = (round(min(f, 1.0) * mask.size[i % 2]) for i, f in enumerate(fractions))
    if right <= left or bottom <= top:
        raise BadRequest("roi is empty: x2 must be right of x1 and y2 below y1")
    kept = Image.new("L", mask.size, 0)
    kept.paste(mask.crop((left, top, right, bottom)), (left, top))
    return kept


def parse_scale(text: str | None) -> float | None:
    """remove.bg's ``scale``: ``original`` (None), or 10%–100%, the subject's share of the image
    along its tighter side → a fraction. Raises BadRequest."""
    if not text or text.strip().lower() == "original":
        return None
    match = _PERCENT.match(text.strip())
    if not match or not 10 <= float(match.group(1)) <= 100:
        raise BadRequest(f"scale is original or a value from 10% to 100%, got {text!r}")
    return float(match.group(1)) / 100


def parse_position(text: str | None) -> tuple[float, float] | None:
    """remove.bg's ``position``: ``original`` (None), ``center``, or one or two values from 0% to
    100% (horizontal, then vertical; one value serves both) → fractions of the free room, where
    0 is left or top, 1 right or bottom. Raises BadRequest."""
    if not text or text.strip().lower() == "original":
        return None
    if text.strip().lower() == "center":
        return 0.5, 0.5
    parts = text.split()
    matches = [_PERCENT.match(part) for part in parts]
    if not 1 <= len(parts) <= 2 or not all(matches) or any(float(m.group(1)) > 100 for m in matches):
        raise BadRequest(f"position is original, center, or one or two values from 0% to 100%, got {text!r}")
    x = float(matches[0].group(1)) / 100
    return x, float(matches[-1].group(1)) / 100


def place_subject(image: Image.Image, mask: Image.Image, scale: float | None,
                  position: tuple[float, float] | None) -> tuple[Image.Image, Image.Image]:
    """``image`` and its ``mask`` with the subject (:func:`main_box`) scaled to ``scale`` of the canvas along its tighter side (None: its own size) and moved to
    ``position`` (:func:`parse_position`; None: where it was, scaled about its centre), on a
    canvas of the same size, transparent (0 in the mask) where the subject is not. An empty mask
    leaves both as they are."""
    box = main_box(mask)
    if box is None or (scale is None and position is None):
        return image, mask
    width, height = box[2] - box[0], box[3] - box[1]
    factor = 1.0 if scale is None else scale * min(image.width / width, image.height / height)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    if position is None:  # stays centred where it was
        left, top = round((box[0] + box[2] - size[0]) / 2), round((box[1] + box[3] - size[1]) / 2)
    else:
        left, top = round((image.width - size[0]) * position[0]), round((image.height - size[1]) * position[1])
    placed = []
    for layer in (image, mask):
        subject = layer.crop(box)
        if size != (width, height):
            subject = subject.resize(size, Image.Resampling.LANCZOS)
        canvas = Image.new(layer.mode, layer.size, 0)  # transparent, or 0 in the mask
        canvas.paste(subject, (left, top))
        placed.append(canvas)
    return placed[0], placed[1]


_CANVAS = re.compile(r"^(\d{1,6})\s*x\s*(\d{1,6})$")
_PADDING = re.compile(r"^(\d+(?:\.\d+)?)(px|%)?$")
ALIGNMENTS = {"horizontal_alignment": {"left": 0.0, "center": 0.5, "right": 1.0},
              "vertical_alignment": {"top": 0.0, "center": 0.5, "bottom": 1.0}}


def parse_canvas(text: str | None, max_pixels: int) -> tuple[int, int] | None:
    """``output_size``: ``WxH`` in pixels (None when not given) → (width, height). Raises
    BadRequest for another shape, ImageTooLarge (413) past ``max_pixels``."""
    if not text or not text.strip():
        return None
    match = _CANVAS.match(text.strip().lower())
    if not match or 0 in (int(match.group(1)), int(match.group(2))):
        raise BadRequest(f"output_size is WIDTHxHEIGHT in pixels, like 1000x1000, got {text[:40]!r}")
    width, height = int(match.group(1)), int(match.group(2))
    if width * height > max_pixels:
        raise ImageTooLarge(f"output_size {width}x{height} is {width * height:,} pixels; answers go up to "
                            f"{max_pixels:,} (MAX_OUTPUT_PIXELS)")
    return width, height


def parse_padding(text: str | None, canvas: tuple[int, int] | None) -> tuple[int, int]:
    """``padding`` as Photoroom writes it, the room left between the subject and each edge of
    the canvas: a ratio from 0 to 0.49 of the canvas' width and height (0.1), a percentage
    (10%) or pixels (100px) → (horizontal, vertical) pixels. Raises BadRequest."""
    if not text or not text.strip():
        return 0, 0
    if canvas is None:
        raise BadRequest("padding is room inside a canvas: give output_size too (or crop with crop_margin)")
    match = _PADDING.match(text.strip().lower())
    if not match:
        raise BadRequest(f"padding is a ratio (0.1), a percentage (10%) or pixels (100px), got {text[:40]!r}")
    value, unit = float(match.group(1)), match.group(2)
    if unit == "px":
        pads = (round(value), round(value))
        if 2 * pads[0] >= canvas[0] or 2 * pads[1] >= canvas[1]:
            raise BadRequest(f"padding {text.strip()} leaves no room in a {canvas[0]}x{canvas[1]} canvas")
        return pads
    share = value / 100 if unit == "%" else value
    if share >= 0.5:
        raise BadRequest(f"padding is less than half the canvas (0 to 0.49, or 0% to 49%), got {text.strip()!r}")
    return round(share * canvas[0]), round(share * canvas[1])


def fit_to_canvas(image: Image.Image, mask: Image.Image, canvas: tuple[int, int], padding: tuple[int, int],
                  align: tuple[float, float]) -> tuple[Image.Image, Image.Image]:
    """``image`` and ``mask`` as a ``canvas`` (width, height) holding the subject
    (:func:`main_box`) scaled, up or down, to fit inside ``padding`` pixels from the edges,
    placed by ``align`` (0 left or top, 1 right or bottom) in the room it leaves; transparent
    (0 in the mask) elsewhere. An empty mask gives an empty canvas."""
    placed = [Image.new(layer.mode, canvas, 0) for layer in (image, mask)]
    box = main_box(mask)
    if box is None:
        return placed[0], placed[1]
    width, height = box[2] - box[0], box[3] - box[1]
    room = (canvas[0] - 2 * padding[0], canvas[1] - 2 * padding[1])
    factor = min(room[0] / width, room[1] / height)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    at = (padding[0] + round((room[0] - size[0]) * align[0]), padding[1] + round((room[1] - size[1]) * align[1]))
    for canvas_layer, layer in zip(placed, (image, mask)):  # resized straight from the box: no copy of the crop
        canvas_layer.paste(layer.resize(size, Image.Resampling.LANCZOS, box=box), at)
    return placed[0], placed[1]
