"""rembg's server routes (``rembg s``) on this server, over real HTTP: POST /api/remove with each of
rembg's parameters, the error shape, the API key; GET is in test_image_url.py."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tools.evaluate import iou

from .support import API_KEY


def post(server, photo: bytes, headers: dict | None = None, **fields: str):
    return server.post("/api/remove", files={"file": ("photo.jpg", photo)}, data=fields, headers=headers or {})


def image(response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as opened:
        return opened.copy()


def test_a_rembg_client_gets_the_cut_out_at_the_photos_size(u2netp_server, sample_photo):
    photo = sample_photo.read_bytes()
    cut = image(post(u2netp_server, photo))
    assert cut.mode == "RGBA" and cut.size == (512, 512)
    alpha = np.asarray(cut)[..., 3]
    assert 0.1 < (alpha == 0).mean() < 0.9
    mask = image(post(u2netp_server, photo, om="true"))
    assert mask.mode == "L" and iou(np.asarray(mask), alpha) > 0.99
    query = image(u2netp_server.post("/api/remove?om=true", files={"file": ("p.jpg", photo)}))  # rembg: form or query
    assert query.mode == "L"
    smooth = np.asarray(image(post(u2netp_server, photo, om="true", ppm="true")))
    assert set(np.unique(smooth)) <= {0, 255}
    green = np.asarray(image(post(u2netp_server, photo, bgc="[0, 255, 0, 255]")))
    assert green[..., 3].min() == 255 and tuple(green[0, -1]) == (0, 255, 0, 255)
    matted = image(post(u2netp_server, photo, a="true", af="240", ab="10", ae="10", extras='{"x": 1}'))
    assert matted.mode == "RGBA"
    named = post(u2netp_server, photo, model="u2netp", some_future_field="1")  # unknown fields: left unread
    assert named.status_code == 200


@pytest.mark.parametrize("fields, words", [
    ({"model": "u2net"}, "this server serves u2netp; model='u2net' would need a server started with "
                         "BG_REMOVAL_MODEL=u2net"),
    ({"model": "no-such-model"}, "not a model this service has"),
    ({"bgc": "green"}, "bgc is a JSON list [R, G, B, A] of 0–255"),
    ({"bgc": "[0, 300, 0, 255]"}, "bgc is a JSON list"),
    ({"om": "maybe"}, "om must be true or false"),
    ({"af": "400"}, "af must be a whole number from 0 to 255"),
])
def test_bad_parameters_get_rembgs_error_shape(u2netp_server, sample_photo, fields, words):
    answer = post(u2netp_server, sample_photo.read_bytes(), **fields)
    assert answer.status_code == 400 and set(answer.json()) == {"detail"} and words in answer.json()["detail"]


def test_no_file_or_not_an_image_is_a_400_detail(u2netp_server):
    missing = u2netp_server.post("/api/remove", data={"om": "true"})
    assert missing.status_code == 400 and "multipart form field 'file'" in missing.json()["detail"]
    broken = u2netp_server.post("/api/remove", files={"file": ("p.jpg", b"not an image")})
    assert broken.status_code == 400 and set(broken.json()) == {"detail"}


def test_api_keys_guard_rembgs_routes_too(keyed_server, sample_photo):
    refused = keyed_server.post("/api/remove", files={"file": ("p.jpg", sample_photo.read_bytes())})
    assert refused.status_code == 401 and set(refused.json()) == {"detail"}
    allowed = post(keyed_server, sample_photo.read_bytes(), headers={"X-API-Key": API_KEY})
    assert allowed.status_code == 200
