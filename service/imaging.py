"""Pixels in and out: decode an upload, feed the network, shape its answer.

The inference path is ``preprocess → run → postprocess`` (``run`` lives in
:mod:`service.engines`); colour and size are converted only in
:func:`decode_upload`, which hands the rest of the service an RGB image no
larger than ``max_dimension`` and, when the upload had one, its alpha.
"""
from __future__ import annotations

import io
import math
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pi_heif
from PIL import Image, ImageChops, ImageColor, ImageOps, UnidentifiedImageError

from .catalog import ModelSpec
from .errors import BadColor, BadRequest, ImageTooLarge, NotAnImage, UnsupportedType

# Pillow plugins an upload may be decoded by; anything else is refused before decoding.
# (Multi-picture JPEGs from cameras open through the JPEG plugin and report "MPO".)
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "HEIF", "AVIF")
# HEIC/HEIF (iPhone photos) through pi-heif, libheif's decoder only; AVIF is Pillow's own.
pi_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)  # the primary image only
# The pixel budget below (Settings.max_pixels) is checked on the declared size
# before any decoding, so Pillow's own, larger, warn-then-fail guard is redundant.
Image.MAX_IMAGE_PIXELS = None
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_EXIF_ORIENTATION = 0x0112
_HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


@dataclass
class Decoded:
    """An upload ready for the model.

    ``rgb``: mode RGB, long side at most ``max_dimension``, orientation applied.
    ``alpha``: mode L of the same size when the upload had transparency, else None.
    ``original_size``: (width, height) after orientation, before any downscaling.
    """
    rgb: Image.Image
    alpha: Image.Image | None
    original_size: tuple[int, int]
    format: str


def _identify_other_format(data: bytes) -> str | None:
    """Name of the format Pillow recognises from the header, for a helpful 415."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.format
    except Exception:  # any parse failure means "not an image we know"
        return None


def _to_8bit(img: Image.Image) -> Image.Image:
    """Grey images of 16 or 32 bits per pixel, scaled (not clipped) to mode L."""
    array = np.asarray(img, dtype=np.float32)
    top = 65535.0 if img.mode.startswith("I") and array.max(initial=0) > 255 else 255.0
    if img.mode == "F" and array.max(initial=0) <= 1.0:
        top = 1.0
    array = np.clip(array * (255.0 / top), 0, 255)
    return Image.fromarray(array.astype(np.uint8), mode="L")


# How far into an HEIF or AVIF file its image sizes ('ispe' boxes) are looked for.
_ISPE_SCAN = 1 << 20


def _declared_isobmff_size(data: bytes) -> tuple[int, int] | None:
    """The largest size an HEIF or AVIF file (ISO base media: an ``ftyp`` box first) declares
    for any of its images ('ispe' boxes: version and flags, then width and height) in its first
    bytes; None for other files, or where none is found there."""
    if data[4:8] != b"ftyp":
        return None
    largest, at = None, data.find(b"ispe", 0, _ISPE_SCAN)
    while at != -1 and at + 16 <= len(data):
        width, height = struct.unpack(">II", data[at + 8:at + 16])
        if largest is None or width * height > largest[0] * largest[1]:
            largest = (width, height)
        at = data.find(b"ispe", at + 4, _ISPE_SCAN)
    return largest


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """The upload opened lazily (its header read, no pixels), its type and declared size checked:
    UnsupportedType, NotAnImage or ImageTooLarge as :func:`decode_upload` documents. An HEIF or
    AVIF file's declared sizes are read from its boxes before libheif or libavif parses it."""
    declared = _declared_isobmff_size(data)
    if declared and declared[0] * declared[1] > max_pixels:
        raise ImageTooLarge(f"image is {declared[0]}×{declared[1]} pixels; the limit is {max_pixels:,} pixels")
    try:
        img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        other = _identify_other_format(data)
        if other:
            raise UnsupportedType(f"{other} images are not supported; "
                                  f"send one of {', '.join(ALLOWED_FORMATS)}") from None
        raise NotAnImage("the file is not an image that can be read") from None
    except Exception:
        raise NotAnImage("the image header is corrupt") from None
    width, height = img.size
    if width * height > max_pixels:
        raise ImageTooLarge(f"image is {width}×{height} pixels; the limit is {max_pixels:,} pixels")
    if width < 1 or height < 1:
        raise NotAnImage("the image has no pixels")
    return img


def _could_be_allowed(head: bytes) -> bool:
    """Whether the first bytes start like a format an upload may be (by Pillow's own tests)."""
    Image.init()
    return any(accept is None or accept(head[:16])
               for name, (_, accept) in Image.OPEN.items() if name in ALLOWED_FORMATS)


def check_header(head: bytes, complete: bool, max_pixels: int) -> None:
    """Refuse an upload from its first bytes alone where they settle it: a type that is not
    allowed or no image at all, or a declared size over ``max_pixels``; the errors of
    :func:`decode_upload`. With ``complete`` false (``head`` is the start of a longer file), a
    header cut short by ``head``'s end passes: only the whole file could tell."""
    try:
        _open_checked(head, max_pixels).close()
    except (UnsupportedType, ImageTooLarge):
        raise
    except NotAnImage:
        if complete or not _could_be_allowed(head):
            raise


def decode_upload(data: bytes, max_dimension: int, max_pixels: int) -> Decoded:
    """Decode image bytes into an RGB image fit for the model.

    The format is sniffed from the bytes, never from a file name. Raises
    UnsupportedType (a known format that is not allowed), NotAnImage (no image,
    truncated or corrupt), ImageTooLarge (declared width × height over ``max_pixels``).
    Animated images give their first frame. Pillow raises many exception types
    for damaged data (a fuzz test finds them), so every step that reads the
    upload maps any exception to NotAnImage: bad bytes are the client's error.
    """
    img = _open_checked(data, max_pixels)
    try:
        return _to_model_input(img, img.format or "", *img.size, max_dimension)
    except Exception:
        raise NotAnImage("the image data is truncated or corrupt") from None


def _to_model_input(img: Image.Image, fmt: str, width: int, height: int, max_dimension: int) -> Decoded:
    """Load, orient, convert and shrink an opened image (see decode_upload)."""
    if fmt in ("JPEG", "MPO") and max(width, height) > max_dimension:
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: never below the size we need.
        scale = max_dimension / max(width, height)
        img.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))
    img.load()
    turned = img.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
    img = ImageOps.exif_transpose(img) or img
    original_size = (height, width) if turned else (width, height)

    if img.mode in _HIGH_DEPTH_MODES:
        img = _to_8bit(img)
    has_alpha = img.mode in _ALPHA_MODES or (img.mode == "P" and "transparency" in img.info)
    img = img.convert("RGBA" if has_alpha else "RGB")

    if max(img.size) > max_dimension:
        img = img.resize(_scaled(img.size, max_dimension), Image.Resampling.LANCZOS)
    alpha = None
    if has_alpha:
        alpha = img.getchannel("A")
        img = img.convert("RGB")
    return Decoded(rgb=img, alpha=alpha, original_size=original_size, format=fmt)


# Answers that can hold an animation, and uploads that can be one (APNG is a PNG of several frames).
ANIMATED_FORMATS = ("png", "webp", "avif")
_ANIMATED_INPUTS = ("GIF", "PNG", "WEBP")
_DEFAULT_FRAME_MS = 100


class AnimationTooLarge(ImageTooLarge):
    code = "animation_too_large"


@dataclass
class Animation:
    """An animated upload, opened (its header and frame count read, no pixels): its frames come
    one at a time from :meth:`frames`, which also gathers their durations."""
    image: Image.Image
    count: int
    loop: int
    max_dimension: int
    durations: list[int]

    def frames(self) -> Iterator[Decoded]:
        """Each frame as the model takes it (composited over the ones before, as a viewer shows
        it; RGB at most ``max_dimension`` on the long side; its alpha where it has transparency)."""
        for index in range(self.count):
            try:
                self.image.seek(index)
                frame = self.image.convert("RGBA")
            except Exception:
                raise NotAnImage(f"frame {index + 1} of the animation is truncated or corrupt") from None
            self.durations.append(int(self.image.info.get("duration") or _DEFAULT_FRAME_MS))
            if max(frame.size) > self.max_dimension:
                frame = frame.resize(_scaled(frame.size, self.max_dimension), Image.Resampling.LANCZOS)
            alpha = frame.getchannel("A")
            yield Decoded(frame.convert("RGB"), alpha if alpha.getextrema()[0] < 255 else None,
                          self.image.size, self.image.format or "")


def open_animation(data: bytes, max_pixels: int, max_frames: int, max_total_pixels: int,
                   max_dimension: int) -> Animation | None:
    """The upload as an :class:`Animation` when it is an animated GIF, WebP or APNG, else None.
    Its type and declared size are checked as for any upload; AnimationTooLarge (413) beyond
    ``max_frames`` frames, or beyond ``max_total_pixels`` for all frames at the processed size,
    before any frame is decoded."""
    image = _open_checked(data, max_pixels)
    if image.format not in _ANIMATED_INPUTS or not getattr(image, "is_animated", False):
        image.close()
        return None
    try:
        count = image.n_frames  # the frames' headers are read, their pixels skipped
    except Exception:
        raise NotAnImage("the animation is truncated or corrupt") from None
    if count > max_frames:
        raise AnimationTooLarge(f"the animation has {count:,} frames; animations are answered up to {max_frames} "
                                f"(MAX_FRAMES); send frames=first for its first frame alone")
    width, height = _scaled(image.size, max_dimension) if max(image.size) > max_dimension else image.size
    if count * width * height > max_total_pixels:
        raise AnimationTooLarge(f"the animation's {count} frames of {width}×{height} are "
                                f"{count * width * height:,} pixels; animations are answered up to "
                                f"{max_total_pixels:,} (MAX_ANIMATION_PIXELS); send frames=first for its first frame")
    return Animation(image, count, int(image.info.get("loop", 0) or 0), max_dimension, [])


def encode_animation(frames: list[Image.Image], durations: list[int], loop: int, fmt: str) -> bytes:
    """Frames of one mode and size → an animation in ``fmt`` (ANIMATED_FORMATS: APNG, WebP or
    AVIF) with these durations (ms) and loop count (0: for ever), encoded as :func:`encode`
    encodes a still."""
    buf = io.BytesIO()
    first, rest = frames[0], frames[1:]
    if fmt == "png":
        first.save(buf, "PNG", save_all=True, append_images=rest, duration=durations, loop=loop, compress_level=1)
    elif fmt == "webp":
        first.save(buf, "WEBP", save_all=True, append_images=rest, duration=durations, loop=loop, quality=90,
                   lossless=first.mode == "L", method=4)
    elif fmt == "avif":
        first.save(buf, "AVIF", save_all=True, append_images=rest, duration=durations, quality=85)
    else:
        raise ValueError(f"{fmt} holds no animation")
    return buf.getvalue()


def _scaled(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """``size`` (width, height) scaled so that its long side is ``long_side``, the aspect kept."""
    scale = long_side / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def shrink(decoded: Decoded, long_side: int) -> Decoded:
    """``decoded`` scaled down (LANCZOS) so that its long side is ``long_side``."""
    size = _scaled(decoded.rgb.size, long_side)
    alpha = decoded.alpha.resize(size, Image.Resampling.LANCZOS) if decoded.alpha is not None else None
    return Decoded(decoded.rgb.resize(size, Image.Resampling.LANCZOS), alpha, decoded.original_size, decoded.format)


def preprocess(rgb: Image.Image, spec: ModelSpec) -> np.ndarray:
    """RGB image → network input, float32 of shape (1, 3, S, S) with S = spec.input_size.

    As rembg does: resize to S×S with LANCZOS (aspect not kept), divide by the
    image's own maximum (not 255), subtract ``spec.mean``, divide by ``spec.std``.
    The three steps are one multiply and one subtract per channel, written from the
    8-bit pixels straight into the planar input (rembg's values to 6e-8; 16 → 3 ms at 1024²).
    """
    size = spec.input_size
    pixels = np.asarray(rgb.resize((size, size), Image.Resampling.LANCZOS))
    top = max(float(pixels.max()), 1e-6)
    out = np.empty((1, 3, size, size), np.float32)
    for channel, (mean, std) in enumerate(zip(spec.mean, spec.std)):
        plane = out[0, channel]
        np.multiply(pixels[..., channel], np.float32(1 / (top * std)), out=plane)
        plane -= np.float32(mean / std)
    return out


def postprocess(prediction: np.ndarray, size: tuple[int, int], activation: str | None = None) -> Image.Image:
    """Network output (1, 1, S, S), any float range → mask, mode L, ``size`` (width, height).

    ``activation`` "sigmoid" first maps logits to 0..1 (models whose graph ends before it:
    :attr:`service.catalog.ModelSpec.activation`). Then min-max normalised to 0..255 and
    truncated to uint8 (rembg's rounding), and resized with LANCZOS. A constant prediction
    gives an empty mask.
    """
    p = prediction[0, 0].astype(np.float32, copy=False)
    if activation == "sigmoid":
        p = 1 / (1 + np.exp(-np.clip(p, -80, 80)))  # clipped: no overflow, the same 0 and 1
    elif activation is not None:
        raise ValueError(f"unknown output activation {activation!r}")
    low, high = float(p.min()), float(p.max())
    if high - low > 0:
        p = (p - low) * np.float32(255.0 / (high - low))
    else:
        p = np.zeros_like(p)
    mask = Image.fromarray(p.astype(np.uint8), mode="L")
    return mask.resize(size, Image.Resampling.LANCZOS)


def combine_alpha(mask: Image.Image, alpha: Image.Image | None) -> Image.Image:
    """The cut-out's alpha: the mask, further limited by the upload's own transparency."""
    return mask if alpha is None else ImageChops.multiply(mask, alpha)


def cutout(rgb: Image.Image, mask: Image.Image, clear_hidden: bool = True) -> Image.Image:
    """RGBA image: ``mask`` as straight alpha over the photo's colours, and (0, 0, 0, 0) where
    the mask is 0: a colour under alpha 0 can't be seen, and runs of zeros halve a cut-out's PNG
    encoding (30 → 15 ms) and shrink its file to about 37% (the sample photos, 2026-11-24).
    ``clear_hidden`` False keeps those colours: for remove.bg's zip, whose JPEG would otherwise
    smear the black into the subject's edge (8×8 blocks, halved chroma).

    Written into one RGBA buffer a strip of rows at a time: no full-size copy besides the
    answer (a 12 MP cut-out's peak stays at its 48 MB RGBA), about 5 ms a megapixel."""
    width, height = rgb.size
    out = np.empty((height, width, 4), np.uint8)
    for top in range(0, height, _CUTOUT_ROWS):
        box = (0, top, width, min(top + _CUTOUT_ROWS, height))
        alpha = np.asarray(mask.crop(box))
        colours = np.asarray(rgb.crop(box))
        if clear_hidden:
            np.multiply(colours, (alpha > 0)[..., None], out=out[box[1]:box[3], :, :3])
        else:
            out[box[1]:box[3], :, :3] = colours
        out[box[1]:box[3], :, 3] = alpha
    return Image.frombuffer("RGBA", (width, height), out, "raw", "RGBA", 0, 1)  # shares out's memory


_CUTOUT_ROWS = 256


Color = tuple[int, int, int] | tuple[int, int, int, int]
Background = Color | Image.Image


def compose(cut: Image.Image, background: Background | None) -> Image.Image:
    """The RGBA ``cut`` over ``background``: None leaves it as it is; a colour gives RGB, or RGBA
    when the colour has alpha below 255 (alpha compositing); an image is scaled to cover the
    cut-out (centred, cropped to its aspect) and gives RGB."""
    if background is None:
        return cut
    if isinstance(background, Image.Image):
        under = ImageOps.fit(background.convert("RGB"), cut.size, Image.Resampling.LANCZOS).convert("RGBA")
    else:
        under = Image.new("RGBA", cut.size, background if len(background) == 4 else (*background, 255))
    out = Image.alpha_composite(under, cut)
    return out if not isinstance(background, Image.Image) and len(background) == 4 and background[3] < 255 \
        else out.convert("RGB")


def compose_on_color(rgb: Image.Image, mask: Image.Image, color: Color) -> Image.Image:
    """The subject, blended by ``mask``, over a solid ``color`` (see :func:`compose`)."""
    return compose(cutout(rgb, mask), color)


_TRIPLET = re.compile(r"^\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*$")
_RGBA = re.compile(r"^rgba\(\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d*\.?\d+)\s*(%?)\s*\)$", re.I)
_BARE_HEX = re.compile(r"^([0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")
COLOR_FORMS = ("#RRGGBB, RRGGBB, #RGB, #RRGGBBAA, R,G,B, rgb(…), rgba(…), a CSS colour name, "
               "or transparent")


def parse_color(text: str | None) -> Color | None:
    """A colour as users and remove.bg clients write it → (r, g, b) or (r, g, b, a); None for
    ``transparent`` (no background). Raises BadColor."""
    if not text or not text.strip():
        raise BadColor(f"missing colour: give color as {COLOR_FORMS}")
    text = text.strip()
    if text.lower() == "transparent":
        return None
    match = _RGBA.match(text)
    if match:  # CSS: alpha 0–1 or a percentage
        *rgb, alpha, percent = match.groups()
        level = float(alpha) / (100 if percent else 1)
        if max(int(v) for v in rgb) > 255 or level > 1:
            raise BadColor(f"rgba(…) takes components 0–255 and an alpha 0–1 or 0–100%, got {text!r}")
        return (*(int(v) for v in rgb), round(level * 255))  # type: ignore[return-value]
    match = _TRIPLET.match(text)
    if match:
        rgb = tuple(int(v) for v in match.groups())
        if max(rgb) > 255:
            raise BadColor(f"colour components must be 0–255, got {text!r}")
        return rgb  # type: ignore[return-value]
    try:
        return ImageColor.getrgb(f"#{text}" if _BARE_HEX.match(text) else text)
    except ValueError:
        raise BadColor(f"unknown colour {text!r}: use {COLOR_FORMS}") from None


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


def encode(image: Image.Image, fmt: str) -> bytes:
    """Image → bytes of ``fmt`` ("png", "webp", "avif", "jpeg" or "zip").

    WebP is lossy (quality 90) for colour, its alpha plane lossless; AVIF is lossy (quality 85),
    its alpha too, for files a fifth of PNG's or less; a mask
    (mode L) is written lossless, since every level of it is data. ``zip`` is remove.bg's:
    ``color.jpg``, the colours, and ``alpha.png``, the alpha, of an RGBA image.
    """
    buf = io.BytesIO()
    if fmt == "png":
        # zlib level 1: on the 14 sample photos, 57 ms a median write against 104 ms at
        # level 3 and about 300 ms at Pillow's default 6, for files 4% larger than level 3.
        # Its run-length strategy (Z_RLE = 3) on top: 31.4 → 28.5 ms, files 3% smaller
        # (the same photos' u2netp cut-outs, 2026-11-24).
        image.save(buf, "PNG", compress_level=1, compress_type=zlib.Z_RLE)
    elif fmt == "webp":
        image.save(buf, "WEBP", lossless=image.mode == "L", quality=90, method=4)
    elif fmt == "avif":
        image.save(buf, "AVIF", quality=85)
    elif fmt == "zip":
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:  # both parts are compressed already
            archive.writestr("color.jpg", encode(image.convert("RGB"), "jpeg"))
            archive.writestr("alpha.png", encode(image.getchannel("A"), "png"))
    else:
        image.convert("RGB").save(buf, "JPEG", quality=92)
    return buf.getvalue()
