"""Uploads to pixels: the formats taken, the checks made before decoding, one RGB image (and
its alpha) no larger than the model's side, animations frame by frame, and shrinking."""
from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pi_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageTooLarge, NotAnImage, UnsupportedType

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


def _scaled(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """``size`` (width, height) scaled so that its long side is ``long_side``, the aspect kept."""
    scale = long_side / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def shrink(decoded: Decoded, long_side: int) -> Decoded:
    """``decoded`` scaled down (LANCZOS) so that its long side is ``long_side``."""
    size = _scaled(decoded.rgb.size, long_side)
    alpha = decoded.alpha.resize(size, Image.Resampling.LANCZOS) if decoded.alpha is not None else None
    return Decoded(decoded.rgb.resize(size, Image.Resampling.LANCZOS), alpha, decoded.original_size, decoded.format)
