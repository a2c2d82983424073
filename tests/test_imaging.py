"""Decoding uploads of every common kind, the three inference verbs, colours."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.model.catalog import CATALOG
from service.errors import BadColor, ImageTooLarge, NotAnImage, UnsupportedType
from service.imaging.compose import compose_on_color, cutout, encode, parse_color, combine_alpha
from service.imaging.decode import decode_upload
from service.imaging.network import postprocess, preprocess

from .support import gradient, png_header_only, save

LIMITS = dict(max_dimension=1024, max_pixels=40_000_000)


@pytest.mark.parametrize("mode", ["RGB", "L", "1", "CMYK", "YCbCr"])
def test_opaque_modes_decode_to_rgb_without_alpha(mode):
    fmt = "JPEG" if mode in ("CMYK", "YCbCr") else "PNG"
    decoded = decode_upload(save(gradient(40, 30).convert(mode), fmt), **LIMITS)
    assert decoded.rgb.mode == "RGB" and decoded.rgb.size == (40, 30)
    assert decoded.alpha is None


def test_cmyk_jpeg_keeps_its_colours():
    red = Image.new("RGB", (16, 16), (220, 20, 20))
    decoded = decode_upload(save(red.convert("CMYK"), "JPEG", quality=95), **LIMITS)
    r, g, b = np.asarray(decoded.rgb).reshape(-1, 3).mean(axis=0)
    assert r > 180 and g < 70 and b < 70


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_of_input_is_kept_apart_from_the_rgb(mode):
    image = gradient(20, 10).convert("RGBA")
    image.putalpha(Image.new("L", (20, 10), 77))
    decoded = decode_upload(save(image.convert(mode), "PNG"), **LIMITS)
    assert decoded.rgb.mode == "RGB"
    assert decoded.alpha is not None and set(np.unique(np.asarray(decoded.alpha))) == {77}


def test_palette_with_transparency_gives_alpha():
    image = Image.new("P", (8, 8), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((0, 0), 1)
    decoded = decode_upload(save(image, "PNG", transparency=1), **LIMITS)
    alpha = np.asarray(decoded.alpha)
    assert alpha[0, 0] == 0 and alpha[1, 1] == 255
    assert decoded.rgb.getpixel((1, 1)) == (255, 0, 0)


def test_sixteen_bit_grey_is_scaled_not_clipped():
    array = np.full((6, 6), 32768, dtype=np.uint16)
    decoded = decode_upload(save(Image.fromarray(array), "PNG"), **LIMITS)
    assert decoded.rgb.getpixel((0, 0)) == (127, 127, 127)


def test_exif_orientation_is_applied():
    image = gradient(60, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    decoded = decode_upload(save(image, "JPEG", exif=exif), **LIMITS)
    assert decoded.rgb.size == (20, 60)
    assert decoded.original_size == (20, 60)


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = save(frames[0], "GIF", save_all=True, append_images=frames[1:])
    decoded = decode_upload(data, **LIMITS)
    r, g, b = decoded.rgb.getpixel((5, 5))
    assert r > 200 and b < 50


def test_large_jpeg_is_processed_at_max_dimension():
    decoded = decode_upload(save(gradient(4000, 3000), "JPEG"), **LIMITS)
    assert decoded.rgb.size == (1024, 768)
    assert decoded.original_size == (4000, 3000)


def test_large_png_is_processed_at_max_dimension_tall():
    decoded = decode_upload(save(gradient(300, 2000), "PNG"), **LIMITS)
    assert decoded.rgb.size == (154, 1024)


def test_one_pixel_image_decodes():
    assert decode_upload(save(Image.new("RGB", (1, 1)), "PNG"), **LIMITS).rgb.size == (1, 1)


def test_extreme_aspect_ratio_keeps_a_pixel_on_the_short_side():
    assert decode_upload(save(Image.new("RGB", (3000, 1)), "PNG"), **LIMITS).rgb.size == (1024, 1)


def test_text_is_not_an_image():
    with pytest.raises(NotAnImage):
        decode_upload(b"hello, this is not a picture", **LIMITS)


def test_truncated_jpeg_is_not_an_image():
    data = save(gradient(200, 200), "JPEG")
    with pytest.raises(NotAnImage):
        decode_upload(data[: len(data) // 2], **LIMITS)


def test_known_but_unsupported_format_is_415():
    with pytest.raises(UnsupportedType, match="ICO"):
        decode_upload(save(Image.new("RGB", (16, 16)), "ICO"), **LIMITS)


def test_declared_pixels_over_budget_are_refused_before_decoding():
    with pytest.raises(ImageTooLarge, match="65000×65000"):
        decode_upload(png_header_only(65000, 65000), **LIMITS)


def test_preprocess_contract():
    spec = CATALOG["u2netp"]
    x = preprocess(gradient(50, 30), spec)
    assert x.shape == (1, 3, 320, 320) and x.dtype == np.float32 and x.flags.c_contiguous
    # divided by the image's own maximum, then ImageNet mean/std per channel
    top = (1.0 - np.array(spec.mean)) / np.array(spec.std)
    assert np.allclose(x.max(axis=(0, 2, 3)), top, atol=0.02)


def test_postprocess_normalises_and_resizes():
    prediction = np.linspace(-3, 5, 16, dtype=np.float32).reshape(1, 1, 4, 4)
    mask = postprocess(prediction, (8, 6))
    assert mask.mode == "L" and mask.size == (8, 6)
    raw = np.asarray(postprocess(prediction, (4, 4)))
    assert raw.min() == 0 and raw.max() == 255


def test_postprocess_applies_the_catalogs_output_activation_first():
    logits = np.array([-1000, -10, 0, 2, 10, 1000], np.float32).reshape(1, 1, 1, 6)
    sigmoid = 1 / (1 + np.exp(-np.clip(logits[0, 0, 0], -80, 80)))
    expected = ((sigmoid - sigmoid.min()) / (sigmoid.max() - sigmoid.min()) * 255).astype(np.uint8)  # rembg's BiRefNet
    with np.errstate(all="raise"):  # no overflow on logits far past the sigmoid's range
        got = np.asarray(postprocess(logits, (6, 1), "sigmoid"))[0]
    assert got.tolist() == expected.tolist() == [0, 0, 127, 224, 254, 255]
    assert np.asarray(postprocess(logits, (6, 1)))[0].tolist() != got.tolist()  # not the plain min-max
    with pytest.raises(ValueError, match="unknown output activation"):
        postprocess(logits, (6, 1), "softmax")


def test_postprocess_of_constant_prediction_is_empty():
    assert np.asarray(postprocess(np.ones((1, 1, 4, 4), np.float32), (4, 4))).max() == 0


def test_cutout_and_composition():
    rgb = Image.new("RGB", (4, 2), (10, 200, 30))
    mask = Image.fromarray(np.array([[0, 255, 128, 255], [0, 0, 0, 0]], np.uint8), "L")
    out = cutout(rgb, mask)
    assert out.mode == "RGBA" and out.getpixel((1, 0)) == (10, 200, 30, 255) and out.getpixel((0, 0))[3] == 0
    assert out.getpixel((2, 0)) == (10, 200, 30, 128)  # soft: straight alpha over the colour
    assert out.getpixel((0, 0)) == out.getpixel((3, 1)) == (0, 0, 0, 0)  # invisible: no colour to store
    assert rgb.getpixel((0, 0)) == (10, 200, 30)  # the photo itself untouched
    on_white = compose_on_color(rgb, mask, (255, 255, 255))
    assert on_white.getpixel((0, 0)) == (255, 255, 255) and on_white.getpixel((1, 0)) == (10, 200, 30)
    half = Image.new("L", (4, 2), 128)
    assert np.asarray(combine_alpha(mask, half))[0, 1] == 128


@pytest.mark.parametrize("text, rgb", [
    ("#00ff00", (0, 255, 0)), ("#0f0", (0, 255, 0)), ("10, 20,30", (10, 20, 30)),
    ("teal", (0, 128, 128)), ("White", (255, 255, 255)), (" #ABCDEF ", (171, 205, 239)),
    ("00ff00", (0, 255, 0)), ("fff", (255, 255, 255)),  # remove.bg's form, without #
    ("#ff000080", (255, 0, 0, 128)), ("rgba(0, 0, 255, 0.5)", (0, 0, 255, 128)), ("rgba(1,2,3,100%)", (1, 2, 3, 255)),
    ("transparent", None), ("Transparent", None),
])
def test_parse_color_accepts_documented_forms(text, rgb):
    assert parse_color(text) == rgb


@pytest.mark.parametrize("text", ["", None, "nope", "#12", "256,0,0", "1,2", "rgba(0,0,0,2)", "rgba(300,0,0,1)",
                                  "ff00"])
def test_parse_color_rejects_the_rest(text):
    with pytest.raises(BadColor):
        parse_color(text)


def test_encode_png_keeps_alpha_and_jpeg_drops_it():
    image = Image.new("RGBA", (5, 5), (1, 2, 3, 100))
    assert Image.open(io.BytesIO(encode(image, "png"))).mode == "RGBA"
    assert Image.open(io.BytesIO(encode(image, "jpeg"))).mode == "RGB"


def test_roi_in_pixels_is_of_the_photo_whatever_size_the_mask_has():
    from service.imaging.geometry import clear_outside, parse_roi

    mask = Image.new("L", (100, 50), 255)  # a 4000×2000 photo's mask, processed at 100×50
    kept = np.asarray(clear_outside(mask, parse_roi("1000px 500px 3000px 2000px"), (4000, 2000)))
    assert kept[:, :25].max() == 0 and kept[:12, :].max() == 0 and kept[:, 75:].max() == 0
    assert kept[13:, 25:75].min() == 255
    assert parse_roi("0% 0% 100% 100%") is None and parse_roi(None) is None


def test_place_subject_keeps_the_canvas_and_moves_image_and_mask_together():
    from service.imaging.geometry import parse_position, place_subject

    mask = Image.new("L", (200, 100), 0)
    mask.paste(255, (20, 10, 60, 90))  # a 40×80 subject
    image = Image.merge("RGBA", (mask, mask, mask, mask))
    moved_image, moved_mask = place_subject(image, mask, 0.5, parse_position("100% 100%"))
    assert moved_image.size == moved_mask.size == (200, 100)
    assert moved_mask.getbbox() == (175, 50, 200, 100)  # 50% of the height: 25×50, bottom right
    assert moved_image.getchannel("A").getbbox() == moved_mask.getbbox()
    assert place_subject(image, Image.new("L", (200, 100), 0), 0.5, None)[0] is image  # no subject: as it was
