"""HEIC/HEIF and AVIF in, AVIF out: decoded like every other format, their declared sizes checked
from their boxes before a decoder sees them (bombs), and over HTTP on the API."""
from __future__ import annotations

import io

import numpy as np
import pillow_heif
import pytest
from PIL import Image

from service.errors import ImageTooLarge, NotAnImage
from service.imaging.decode import check_header, decode_upload

from .support import save


def heic(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    pillow_heif.from_pillow(image).save(buffer, quality=90)
    return buffer.getvalue()


def avif(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "AVIF", quality=90)
    return buffer.getvalue()


def declaring(data: bytes, width: int, height: int) -> bytes:
    """``data`` with every image size box ('ispe') declaring width × height."""
    patched, at = bytearray(data), data.find(b"ispe")
    assert at > 0
    while at != -1:
        patched[at + 8:at + 16] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
        at = data.find(b"ispe", at + 4)
    return bytes(patched)


@pytest.fixture(scope="module")
def photo(sample_photo) -> Image.Image:
    with Image.open(sample_photo) as image:
        return image.convert("RGB")


@pytest.mark.parametrize("write, name", [(heic, "HEIF"), (avif, "AVIF")])
def test_heic_and_avif_decode_like_the_photo_they_hold(photo, write, name):
    decoded = decode_upload(write(photo), 1024, 40_000_000)
    assert decoded.format == name and decoded.original_size == photo.size and decoded.alpha is None
    difference = np.abs(np.asarray(decoded.rgb, dtype=int) - np.asarray(photo.resize(decoded.rgb.size), dtype=int))
    assert difference.mean() < 4  # lossy at quality 90, the same picture


def test_an_avif_s_own_transparency_is_kept():
    image = Image.new("RGBA", (64, 48), (200, 40, 40, 255))
    image.paste((0, 0, 0, 0), (0, 0, 32, 48))
    decoded = decode_upload(avif(image), 1024, 40_000_000)
    alpha = np.asarray(decoded.alpha)
    assert alpha[:, :28].max() < 20 and alpha[:, 36:].min() > 235


@pytest.mark.parametrize("write", [heic, avif])
def test_a_bomb_is_refused_from_its_boxes_before_any_decoder_reads_it(photo, write):
    bomb = declaring(write(photo.resize((64, 48))), 65000, 65000)
    with pytest.raises(ImageTooLarge, match="65000×65000"):
        decode_upload(bomb, 1024, 40_000_000)
    with pytest.raises(ImageTooLarge):
        check_header(bomb[:1000], False, 40_000_000)  # the busy server's screen: the first bytes only
    with pytest.raises(NotAnImage):
        decode_upload(write(photo.resize((64, 48)))[:300], 1024, 40_000_000)  # cut short


def test_heic_and_avif_over_http_and_avif_answers(u2netp_server, photo):
    as_jpeg = u2netp_server.post("/api/bg/remove", files={"file": ("p.jpg", save(photo, "JPEG"))},
                                 data={"only_mask": "true"})
    reference = np.asarray(Image.open(io.BytesIO(as_jpeg.content))) > 127
    for name, data in (("IMG_0001.HEIC", heic(photo)), ("p.avif", avif(photo))):
        answer = u2netp_server.post("/api/bg/remove", files={"file": (name, data)}, data={"only_mask": "true"})
        assert answer.status_code == 200, answer.text
        mask = np.asarray(Image.open(io.BytesIO(answer.content))) > 127
        assert (mask & reference).sum() / (mask | reference).sum() > 0.97, name

    cut = u2netp_server.post("/api/bg/remove", files={"file": ("p.heic", heic(photo))}, data={"format": "avif"})
    assert cut.status_code == 200 and cut.headers["Content-Type"] == "image/avif"
    assert cut.headers["Content-Disposition"].endswith('.avif"')
    with Image.open(io.BytesIO(cut.content)) as image:
        assert image.format == "AVIF" and image.mode == "RGBA" and image.size == photo.size
    png = u2netp_server.post("/api/bg/remove", files={"file": ("p.heic", heic(photo))})
    assert len(cut.content) < len(png.content) / 4
    composed = u2netp_server.post("/api/bg/change_color", files={"file": ("p.avif", avif(photo))},
                                  data={"color": "white", "format": "avif"})
    assert composed.status_code == 200 and composed.headers["Content-Type"] == "image/avif"

    refused = u2netp_server.post("/api/bg/remove", files={"file": ("p.heic", heic(photo))},
                                 data={"only_mask": "true", "format": "avif"})
    assert refused.status_code == 400 and "png or webp" in refused.json()["error"]
    bomb = u2netp_server.post("/api/bg/remove", files={"file": ("b.heic", declaring(heic(photo), 65000, 65000))})
    assert bomb.status_code == 413 and bomb.json()["code"] == "image_too_large"


def test_a_jpeg_asked_of_the_cut_out_is_refused_in_the_words_it_was_asked_with(client, sample_photo):
    response = client.post("/api/bg/remove", data={"file": (io.BytesIO(sample_photo.read_bytes()), "a.jpg"),
                                                   "format": "jpg"})
    assert response.status_code == 400
    assert response.json["error"] == ("format must be one of png, webp, avif, got 'jpg'; JPEG has no transparency: "
                                      "/api/bg/change_color answers JPEG on a colour")
