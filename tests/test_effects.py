"""Shadows drawn from the mask: where they fall, how dark, what they leave alone; and over HTTP on
both APIs, with every bad value refused in each API's error shape."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from service.effects import shadow_alpha, with_shadow
from service.imaging import cutout

from .support import save


def subject(width=400, height=300, box=(150, 60, 250, 220)) -> tuple[Image.Image, Image.Image]:
    """A grey photo with a red block, and the block's mask."""
    photo = Image.new("RGB", (width, height), (90, 90, 90))
    ImageDraw.Draw(photo).rectangle(box, fill=(220, 30, 30))
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return photo, mask


def test_a_drop_shadow_falls_down_and_right_of_the_subject_and_leaves_it_untouched():
    photo, mask = subject()
    cut = cutout(photo, mask)
    shaded = np.asarray(with_shadow(cut, mask, "drop", 0.5))
    plain = np.asarray(cut)
    inside = np.asarray(mask) == 255
    assert np.array_equal(shaded[inside], plain[inside])  # the subject as it was
    assert shaded[226, 200, 3] > 20 and shaded[140, 254, 3] > 20  # below and right of the box
    assert shaded[50, 140, 3] == 0 and shaded[140, 146, 3] < shaded[140, 254, 3]  # not up, less to the left
    assert (shaded[~inside][:, :3] == 0).all()  # black
    assert shaded[~inside][:, 3].max() <= 128  # at most the opacity


def test_opacity_scales_the_shadow_and_a_contact_shadow_lies_at_the_base():
    _, mask = subject()
    half, full = (np.asarray(shadow_alpha(mask, "drop", o), dtype=int) for o in (0.5, 1.0))
    assert abs(full.max() - 2 * half.max()) <= 2
    contact = np.asarray(shadow_alpha(mask, "contact", 1.0))
    rows = np.nonzero(contact.max(axis=1) > 10)[0]
    assert 205 <= rows.min() and rows.max() <= 240  # a thin band about the bottom edge (220)
    assert contact[:150].max() == 0


def test_no_subject_no_shadow_and_a_large_answer_costs_a_small_layer():
    empty = Image.new("L", (64, 64), 0)
    cut = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    assert with_shadow(cut, empty, "drop", 0.5) is cut
    _, mask = subject(4000, 3000, (1500, 600, 2500, 2200))
    alpha = shadow_alpha(mask, "drop", 0.5)
    assert alpha.size == (4000, 3000) and np.asarray(alpha)[2230, 2100] > 0
    with pytest.raises(ValueError):
        shadow_alpha(mask, "3d", 0.5)


def alpha_of(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    with Image.open(io.BytesIO(response.content)) as image:
        return np.asarray(image.getchannel("A"))


def test_shadows_over_http_on_both_apis(u2netp_server, sample_photo):
    photo = {"file": ("astronaut.jpg", sample_photo.read_bytes())}
    plain = alpha_of(u2netp_server.post("/api/bg/remove", files=photo))
    drop = alpha_of(u2netp_server.post("/api/bg/remove", files=photo, data={"shadow": "drop"}))
    contact = alpha_of(u2netp_server.post("/api/bg/remove", files=photo,
                                          data={"shadow": "contact", "shadow_opacity": "80"}))
    assert (drop > 0).sum() > (plain > 0).sum() and (contact >= plain).all() and (drop >= plain).all()
    on_white = u2netp_server.post("/api/bg/change_color", files=photo, data={"color": "white", "shadow": "drop"})
    assert on_white.status_code == 200 and on_white.headers["Content-Type"] == "image/jpeg"

    removebg = {"image_file": ("astronaut.jpg", sample_photo.read_bytes())}
    for fields in ({"shadow_type": "drop", "shadow_opacity": "80"}, {"add_shadow": "true"},
                   {"shadow_type": "contact"}):
        answer = u2netp_server.post("/v1.0/removebg", files=removebg, data={"format": "png", **fields})
        assert (alpha_of(answer) > 0).sum() > (plain > 0).sum() * 0.5, fields


@pytest.mark.parametrize("path, fields, code", [
    ("/api/bg/remove", {"shadow": "3d"}, "bad_request"),
    ("/api/bg/remove", {"shadow": "drop", "shadow_opacity": "150"}, "bad_request"),
    ("/api/bg/remove", {"shadow_opacity": "50"}, "bad_request"),
    ("/api/bg/remove", {"shadow": "drop", "only_mask": "true"}, "bad_request"),
    ("/v1.0/removebg", {"shadow_type": "car"}, "invalid_parameters"),
    ("/v1.0/removebg", {"shadow_type": "3D"}, "invalid_parameters"),
    ("/v1.0/removebg", {"shadow_type": "fancy"}, "invalid_parameters"),
    ("/v1.0/removebg", {"shadow_type": "drop", "shadow_opacity": "-1"}, "invalid_parameters"),
    ("/v1.0/removebg", {"shadow_type": "drop", "channels": "alpha"}, "invalid_parameters"),
    ("/v1.0/removebg", {"add_shadow": "maybe"}, "invalid_parameters"),
])
def test_bad_shadow_values_get_a_clear_400(u2netp_server, path, fields, code):
    field = "image_file" if path.startswith("/v1.0") else "file"
    response = u2netp_server.post(path, files={field: ("p.png", save(Image.new("RGB", (32, 32)), "PNG"))},
                                  data=fields)
    assert response.status_code == 400, response.text
    body = response.json()
    found = body["errors"][0]["code"] if "errors" in body else body["code"]
    assert found == code
    if fields.get("shadow_type") in ("car", "3D"):
        assert "needs a model this server does not have" in body["errors"][0]["detail"]
