"""POST /v1.0/removebg: remove.bg's API on the live server, by raw HTTP and by a remove.bg client."""
from __future__ import annotations

import base64
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.imaging.geometry import SOLID_LEVEL, main_box
from service.imaging.decode import decode_upload
from service.http.state import app_state
from tools.evaluate import iou

from .support import API_KEY, gradient, npm_install, save

KEY = API_KEY


def errors_of(response, status: int, code: str) -> str:
    """The detail of a remove.bg-shaped error answer with this status and code."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    (error,) = response.json()["errors"]
    assert error["code"] == code and error["title"] and error["detail"]
    return error["detail"]


def post(server, photo: bytes, **params):
    return server.post("/v1.0/removebg", files={"image_file": ("photo.jpg", photo)}, data=params)


def test_the_default_answer_is_a_transparent_png_with_remove_bgs_headers(u2netp_server, app, sample_photo):
    response = post(u2netp_server, sample_photo.read_bytes())
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.mode == "RGBA" and image.size == (512, 512)  # size=auto: the photo's own size here
    assert (response.headers["X-Width"], response.headers["X-Height"]) == ("512", "512")
    assert response.headers["X-Credits-Charged"] == "0"
    # the same mask as /api/bg/remove, and its box in the headers
    expected = np.asarray(app_state(app).model.engine.predict_mask(
        decode_upload(sample_photo.read_bytes(), 1024, 40_000_000).rgb))
    alpha = np.asarray(image.getchannel("A"))
    assert iou(alpha, expected) > 0.98
    rows, cols = np.nonzero(alpha >= 128)
    box = {k: int(response.headers[f"X-Foreground-{k}"]) for k in ("Top", "Left", "Width", "Height")}
    assert box == {"Top": rows.min(), "Left": cols.min(), "Width": cols.max() - cols.min() + 1,
                   "Height": rows.max() - rows.min() + 1}


@pytest.mark.parametrize("size, pixels", [("regular", 250_000), ("medium", 1_500_000), ("hd", 4_000_000),
                                          ("full", 6_000_000), ("auto", 6_000_000)])
def test_sizes_are_remove_bgs_megapixels_up_to_the_photos_own(u2netp_server, size, pixels):
    photo = save(gradient(3000, 2000), "JPEG")
    response = post(u2netp_server, photo, size=size, channels="alpha")
    image = Image.open(io.BytesIO(response.content))
    assert response.status_code == 200 and 0.97 * pixels <= image.width * image.height <= pixels
    assert abs(image.width / image.height - 1.5) < 0.01
    assert (response.headers["X-Width"], response.headers["X-Height"]) == (str(image.width), str(image.height))


def test_size_full_over_the_servers_output_limit_is_413_and_auto_scales_down(u2netp_server):
    photo = save(gradient(5000, 3000), "JPEG")  # 15 MP, over MAX_OUTPUT_PIXELS (12 M)
    assert "MAX_OUTPUT_PIXELS" in errors_of(post(u2netp_server, photo, size="full"), 413, "image_too_large")
    image = Image.open(io.BytesIO(post(u2netp_server, photo, size="auto", channels="alpha").content))
    assert 0.99 * 12_000_000 <= image.width * image.height <= 12_000_000


def test_bg_color_without_hash_gives_a_jpeg_on_that_colour(u2netp_server, sample_photo):
    response = post(u2netp_server, sample_photo.read_bytes(), bg_color="00ff00")
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/jpeg"
    image = Image.open(io.BytesIO(response.content)).convert("RGB")
    corner = np.asarray(image)[:8, -8:].reshape(-1, 3).mean(axis=0)  # sky behind the astronaut
    assert corner[1] > 200 and corner[0] < 60 and corner[2] < 60
    assert post(u2netp_server, sample_photo.read_bytes(), bg_color="green", format="png").headers[
        "Content-Type"] == "image/png"


def test_channels_alpha_and_hard_edges_without_semitransparency(u2netp_server, sample_photo):
    response = post(u2netp_server, sample_photo.read_bytes(), channels="alpha", semitransparency="false")
    mask = Image.open(io.BytesIO(response.content))
    assert response.status_code == 200 and mask.mode == "L"
    assert set(np.unique(np.asarray(mask))) <= {0, 255}


def test_json_bodies_base64_images_and_json_answers(u2netp_server, sample_photo):
    response = u2netp_server.post("/v1.0/removebg", headers={"Accept": "application/json"},
                                  json={"image_file_b64": base64.b64encode(sample_photo.read_bytes()).decode(),
                                        "size": "preview", "format": "webp"})
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    data = response.json()["data"]
    image = Image.open(io.BytesIO(base64.b64decode(data["result_b64"])))
    assert image.format == "WEBP" and image.width * image.height <= 250_000
    assert data["foreground_width"] > 0 and data["foreground_height"] > 0


def test_urlencoded_bodies_work_too(u2netp_server, sample_photo):
    response = u2netp_server.post("/v1.0/removebg", data={
        "image_file_b64": base64.b64encode(sample_photo.read_bytes()).decode(), "size": "small"})
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/png"


@pytest.mark.parametrize("params, code, words", [
    ({"crop": "maybe"}, "invalid_parameters", "crop"),
    ({"crop": "true", "crop_margin": "ten"}, "invalid_parameters", "crop_margin"),
    ({"format": "zip", "bg_color": "red"}, "invalid_parameters", "zip"),
    ({"format": "zip", "channels": "alpha"}, "invalid_parameters", "zip"),
    ({"format": "jpg"}, "invalid_parameters", "transparency"),
    ({"bg_image_url": "http://example.com/b.jpg"}, "invalid_parameters", "bg_image_url"),
    ({"scale": "5%"}, "invalid_parameters", "scale"),
    ({"scale": "half"}, "invalid_parameters", "scale"),
    ({"position": "left"}, "invalid_parameters", "position"),
    ({"position": "10% 20% 30%"}, "invalid_parameters", "position"),
    ({"roi": "0 0 100"}, "invalid_parameters", "roi"),
    ({"roi": "50% 0% 10% 100%"}, "invalid_parameters", "roi"),
    ({"roi": "0% 0% 150% 100%"}, "invalid_parameters", "roi"),
    ({"shadow_type": "car"}, "invalid_parameters", "shadow_type"),
    ({"add_shadow": "yes"}, "invalid_parameters", "add_shadow"),
    ({"type": "spaceship"}, "invalid_parameters", "type"),
    ({"type_level": "3"}, "invalid_parameters", "type_level"),
    ({"size": "huge"}, "invalid_parameters", "size"),
    ({"bg_color": "not-a-colour"}, "invalid_parameters", "bg_color"),
])
def test_what_cannot_be_honoured_is_refused_in_remove_bgs_shape(u2netp_server, sample_photo, params, code, words):
    assert words in errors_of(post(u2netp_server, sample_photo.read_bytes(), **params), 400, code)


def test_crop_with_a_margin_cuts_to_the_subjects_box(u2netp_server, sample_photo):
    plain = post(u2netp_server, sample_photo.read_bytes(), channels="alpha")
    whole = np.asarray(Image.open(io.BytesIO(plain.content)))
    # the subject's box (service/imaging/geometry.py, main_box): the haze and faint specks are no subject
    left, top, right, bottom = main_box(Image.fromarray(whole))
    cropped = post(u2netp_server, sample_photo.read_bytes(), channels="alpha", crop="true", crop_margin="10px")
    mask = Image.open(io.BytesIO(cropped.content))
    # the subject touches the photo's left and bottom edges: the margin there is transparent padding
    assert mask.size == (right - left + 20, bottom - top + 20)
    values = np.asarray(mask)
    assert values[:10].max() < SOLID_LEVEL and values[-10:].max() < SOLID_LEVEL  # the margins hold no subject
    assert (values >= SOLID_LEVEL).sum() == (whole >= SOLID_LEVEL).sum()  # and none of it is cut
    assert (cropped.headers["X-Width"], cropped.headers["X-Height"]) == (str(mask.width), str(mask.height))


def test_a_background_image_is_put_behind_the_subject(u2netp_server, sample_photo):
    red = save(Image.new("RGB", (300, 200), (220, 10, 10)), "PNG")
    response = u2netp_server.post("/v1.0/removebg", files={"image_file": ("p.jpg", sample_photo.read_bytes()),
                                                           "bg_image_file": ("bg.png", red)})
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/jpeg"
    image = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    assert image.shape[:2] == (512, 512)
    assert tuple(image[:8, -8:].reshape(-1, 3).mean(axis=0) > 150) == (True, False, False)  # red behind


def test_bad_input_is_refused_in_remove_bgs_shape(u2netp_server):
    errors_of(u2netp_server.post("/v1.0/removebg", data={"size": "auto"}), 400, "missing_image")
    errors_of(u2netp_server.post("/v1.0/removebg", data={"image_url": "http://127.0.0.1/x.jpg"}),
              400, "invalid_parameters")
    errors_of(u2netp_server.post("/v1.0/removebg", data={"image_file_b64": "%%%"}), 400, "invalid_parameters")
    errors_of(post(u2netp_server, b"not an image"), 400, "not_an_image")
    errors_of(post(u2netp_server, b"\xff" * (9 * 2**20)), 413, "file_too_large")


def test_the_key_goes_in_x_api_key(keyed_server, sample_photo):
    errors_of(post(keyed_server, sample_photo.read_bytes()), 403, "auth_failed")
    response = keyed_server.post("/v1.0/removebg", files={"image_file": ("p.jpg", sample_photo.read_bytes())},
                                 headers={"X-Api-Key": KEY})
    assert response.status_code == 200


def test_a_remove_bg_client_library_works_by_changing_only_its_base_url(keyed_server, sample_photo, tmp_path,
                                                                        monkeypatch):
    from removebg import RemoveBg, removebg as client  # PyPI's removebg (MIT), as its users call it

    monkeypatch.setattr(client, "API_ENDPOINT", keyed_server.url + "/v1.0/removebg")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(sample_photo.read_bytes())
    RemoveBg(KEY, str(tmp_path / "errors.log")).remove_background_from_img_file(str(photo))
    with Image.open(tmp_path / "photo.jpg_no_bg.png") as image:  # its default: size=regular
        assert image.mode == "RGBA" and image.width * image.height <= 250_000
    RemoveBg(KEY, str(tmp_path / "errors.log")).remove_background_from_base64_img(
        base64.b64encode(sample_photo.read_bytes()).decode(), new_file_name=str(tmp_path / "b64.png"),
        bg_color="81d4fa")
    with Image.open(tmp_path / "b64.png") as image:  # remove.bg answers a JPEG for a colour, as here
        assert image.format == "JPEG"


def alpha_box(response) -> tuple[int, int, int, int]:
    """(left, top, right, bottom), inclusive, of the answer's pixels above the haze (5)."""
    assert response.status_code == 200, response.text
    mask = np.asarray(Image.open(io.BytesIO(response.content)).convert("L"))
    rows, cols = np.nonzero(mask > 5)
    return cols.min(), rows.min(), cols.max(), rows.max()


def test_format_zip_is_the_colours_as_jpeg_and_the_alpha_as_png(u2netp_server, sample_photo):
    response = post(u2netp_server, sample_photo.read_bytes(), format="zip")
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert sorted(archive.namelist()) == ["alpha.png", "color.jpg"]
    color, alpha = Image.open(archive.open("color.jpg")), Image.open(archive.open("alpha.png"))
    assert (color.format, color.mode, alpha.format, alpha.mode) == ("JPEG", "RGB", "PNG", "L")
    assert color.size == alpha.size == (512, 512)
    mask = Image.open(io.BytesIO(post(u2netp_server, sample_photo.read_bytes(), channels="alpha").content))
    assert np.array_equal(np.asarray(alpha), np.asarray(mask))
    # the photo's own colours where the alpha is 0, as JPEG keeps them (a PNG answer has zeros there)
    hidden = np.asarray(alpha) == 0
    photo = np.asarray(Image.open(sample_photo).convert("RGB").resize(color.size), dtype=float)
    assert hidden.mean() > 0.1 and np.abs(np.asarray(color, dtype=float) - photo)[hidden].mean() < 8
    png = np.asarray(Image.open(io.BytesIO(post(u2netp_server, sample_photo.read_bytes(), format="png").content)))
    assert not png[hidden].any()


def test_scale_shrinks_the_subject_and_centres_it(u2netp_server, sample_photo):
    left, top, right, bottom = alpha_box(post(u2netp_server, sample_photo.read_bytes(), channels="alpha"))
    width, height = right - left + 1, bottom - top + 1
    s_left, s_top, s_right, s_bottom = alpha_box(post(u2netp_server, sample_photo.read_bytes(), channels="alpha",
                                                      scale="50%"))
    # half the canvas along the subject's tighter side, the aspect kept, in the middle
    assert abs(max((s_right - s_left + 1) / 512, (s_bottom - s_top + 1) / 512) - 0.5) < 0.02
    assert abs((s_right - s_left + 1) / (s_bottom - s_top + 1) - width / height) < 0.05
    assert abs((s_left + s_right) / 2 - 255.5) < 3 and abs((s_top + s_bottom) / 2 - 255.5) < 3


def test_position_puts_the_subject_where_asked(u2netp_server, sample_photo):
    box = alpha_box(post(u2netp_server, sample_photo.read_bytes(), channels="alpha", scale="40%",
                         position="100% 0%"))  # top right
    assert box[2] >= 509 and box[1] <= 2 and box[0] > 250
    cut = post(u2netp_server, sample_photo.read_bytes(), scale="40%", position="0%")  # left, and top
    assert cut.status_code == 200
    image = Image.open(io.BytesIO(cut.content))
    assert image.mode == "RGBA" and image.size == (512, 512)
    assert np.asarray(image.getchannel("A"))[-150:, -150:].max() == 0  # moved away: transparent there
    assert int(cut.headers["X-Foreground-Left"]) <= 2 and int(cut.headers["X-Foreground-Top"]) <= 2


def test_roi_keeps_the_subject_inside_the_region_only(u2netp_server, sample_photo):
    whole = np.asarray(Image.open(io.BytesIO(post(u2netp_server, sample_photo.read_bytes(),
                                                  channels="alpha").content)))
    for roi in ("0% 0% 50% 100%", "0px 0px 256px 512px", "0 0 256 512"):
        response = post(u2netp_server, sample_photo.read_bytes(), channels="alpha", roi=roi)
        mask = np.asarray(Image.open(io.BytesIO(response.content)))
        assert mask[:, 256:].max() == 0, roi
        assert np.array_equal(mask[:, :256], whole[:, :256]), roi
    assert post(u2netp_server, sample_photo.read_bytes(), roi="0% 0% 100% 100%").status_code == 200


# npm's remove.bg client (MIT), the one whose options cover crop, scale and position; its endpoint
# is a constant, so the test loads a copy with only that constant changed.
NPM_CLIENT = "remove.bg@1.3.0"
NODE_SCRIPT = """
const fs = require("fs");
const path = require("path");
const source = path.join(process.cwd(), "node_modules/remove.bg/dist/index.js");
const local = path.join(path.dirname(source), "local.js");
fs.writeFileSync(local, fs.readFileSync(source, "utf8").replace("https://api.remove.bg", process.argv[2]));
const removebg = require(local);
const photo = process.argv[3], key = process.argv[4];
(async () => {
  const cropped = await removebg.removeBackgroundFromImageFile({path: photo, apiKey: key, size: "full",
      crop: true, crop_margin: "20px", outputFile: "cropped.png"});
  const placed = await removebg.removeBackgroundFromImageBase64({base64img: fs.readFileSync(photo, "base64"),
      apiKey: key, size: "regular", scale: "50%", position: "0% 100%", channels: "alpha", outputFile: "placed.png"});
  const plain = await removebg.removeBackgroundFromImageFile({path: photo, apiKey: key, size: "regular",
      outputFile: "plain.png"});
  const shadowed = await removebg.removeBackgroundFromImageFile({path: photo, apiKey: key, size: "regular",
      add_shadow: true, outputFile: "shadowed.png"});
  console.log(JSON.stringify({cropped, placed, plain, shadowed}, (k, v) => k === "base64img" ? undefined : v));
})().catch(error => { console.error(JSON.stringify(error)); process.exit(1); });
"""


@pytest.fixture(scope="module")
def npm_client(tmp_path_factory) -> Path:
    folder = npm_install(tmp_path_factory.mktemp("npm-client"), NPM_CLIENT)
    (folder / "run.js").write_text(NODE_SCRIPT)
    return folder


def test_npms_remove_bg_client_crops_places_shadows_and_gets_full_resolution(keyed_server, npm_client, sample_photo):
    import json
    import subprocess

    photo = npm_client / "large.jpg"  # 2048², four times the pixels the model sees
    with Image.open(sample_photo) as image:
        image.resize((2048, 2048), Image.Resampling.LANCZOS).save(photo, "JPEG", quality=92)
    run = subprocess.run(["node", "run.js", keyed_server.url, str(photo), KEY], cwd=npm_client,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    answers = json.loads(run.stdout)
    with Image.open(npm_client / "cropped.png") as cropped:
        assert cropped.mode == "RGBA"
        assert cropped.size == (int(answers["cropped"]["resultWidth"]), int(answers["cropped"]["resultHeight"]))
        assert max(cropped.size) > 1024 and cropped.size != (2048, 2048)  # full resolution, cut to the subject
        alpha = np.asarray(cropped.getchannel("A"))
        # the 20 px margins hold no subject: no half-opaque pixel, and the subject's box (as crops
        # measure it: service/imaging/geometry.py, main_box) inside them
        assert alpha[:20].max() < SOLID_LEVEL and alpha[:, -20:].max() < SOLID_LEVEL
        box = main_box(cropped.getchannel("A"))
        assert box[1] >= 20 and box[2] <= cropped.width - 20
    with Image.open(npm_client / "placed.png") as placed:
        mask = np.asarray(placed)
        assert placed.mode == "L" and placed.width * placed.height <= 250_000
        rows, cols = np.nonzero(mask > 5)
        assert cols.min() <= 2 and rows.max() >= placed.height - 3  # bottom left
        assert max(cols.max() - cols.min() + 1, rows.max() - rows.min() + 1) <= 0.52 * placed.width
    assert answers["cropped"]["creditsCharged"] == "0"
    with Image.open(npm_client / "plain.png") as plain, Image.open(npm_client / "shadowed.png") as shadowed:
        plain_alpha, shadow_alpha = np.asarray(plain.getchannel("A")), np.asarray(shadowed.getchannel("A"))
        assert plain.size == shadowed.size  # add_shadow=true: a drop shadow under the same cut-out
        assert (shadow_alpha >= plain_alpha).all() and (shadow_alpha > 0).sum() > (plain_alpha > 0).sum() * 1.02


def test_type_hints_and_default_shadow_values_are_accepted_and_change_nothing(u2netp_server, sample_photo):
    plain = post(u2netp_server, sample_photo.read_bytes(), channels="alpha")
    hinted = post(u2netp_server, sample_photo.read_bytes(), channels="alpha", type="person", type_level="latest",
                  add_shadow="false", shadow_type="none", scale="original", position="original",
                  roi="0% 0% 100% 100%")
    assert hinted.status_code == 200 and hinted.content == plain.content
