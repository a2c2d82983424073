"""The HTTP API, over real HTTP, against `python app_isnet_tiny.py` running on loopback."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.model.catalog import CATALOG
from tools.evaluate import iou
from service.model.fetch import verify
from service.imaging.decode import decode_upload
from service.imaging.geometry import main_box
from service.http.state import app_state

from .support import gradient, png_header_only, save, start_server


def image_of(response) -> Image.Image:
    return Image.open(io.BytesIO(response.content))


def image_answer(response, content_type: str, filename: str) -> Image.Image:
    """The image of a 200 answer with this Content-Type and download name."""
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == content_type
    assert response.headers["Content-Disposition"] == f'attachment; filename="{filename}"'
    return image_of(response)


def assert_json_error(response, status: int, code: str):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == code and body["error"]
    assert "Traceback" not in response.text


def test_remove_returns_a_transparent_png_of_the_same_size(u2netp_server, app, sample_photo):
    response = u2netp_server.post("/api/bg/remove", files={"file": ("astronaut.jpg", sample_photo.read_bytes())})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["Content-Disposition"] == 'attachment; filename="nobg_astronaut.png"'
    assert response.headers["X-Model-Used"].startswith("u2netp (")
    assert int(response.headers["X-Processing-Time-Ms"]) >= 0
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    result = image_of(response)
    # the server's cut-out carries the mask the same model makes in process (which
    # tests/test_parity.py holds against rembg's own masks)
    decoded = decode_upload(sample_photo.read_bytes(), 1024, 40_000_000)
    reference = app_state(app).model.engine.predict_mask(decoded.rgb)
    assert result.mode == "RGBA" and result.size == reference.size
    assert iou(np.asarray(result.getchannel("A")), np.asarray(reference)) > 0.98


def test_remove_of_a_large_photo_answers_at_max_dimension(u2netp_server):
    response = u2netp_server.post("/api/bg/remove", files={"file": ("big.jpg", save(gradient(4000, 3000), "JPEG"))})
    assert response.status_code == 200
    assert image_of(response).size == (1024, 768)


def test_remove_keeps_the_uploads_own_transparency(u2netp_server, sample_photo):
    photo = Image.open(sample_photo).convert("RGBA")
    photo.putalpha(Image.new("L", photo.size, 0))
    response = u2netp_server.post("/api/bg/remove", files={"file": ("clear.png", save(photo, "PNG"))})
    assert response.status_code == 200
    assert np.asarray(image_of(response).getchannel("A")).max() == 0


def test_only_mask_answers_the_grey_mask_of_the_cut_out(u2netp_server, sample_photo):
    upload = {"file": ("p.jpg", sample_photo.read_bytes())}
    cut = image_of(u2netp_server.post("/api/bg/remove", files=upload))
    response = u2netp_server.post("/api/bg/remove", files=upload, data={"only_mask": "true"})
    mask = image_answer(response, "image/png", "mask_p.png")
    assert mask.mode == "L" and mask.size == cut.size
    assert np.array_equal(np.asarray(mask), np.asarray(cut.getchannel("A")))


def test_webp_keeps_the_alpha_exactly_and_the_colours_closely(u2netp_server, sample_photo):
    upload = {"file": ("p.jpg", sample_photo.read_bytes())}
    png = image_of(u2netp_server.post("/api/bg/remove", files=upload))
    response = u2netp_server.post("/api/bg/remove", files=upload, data={"format": "webp"})
    webp = image_answer(response, "image/webp", "nobg_p.webp")
    assert webp.format == "WEBP" and webp.mode == "RGBA" and webp.size == png.size
    assert np.array_equal(np.asarray(webp.getchannel("A")), np.asarray(png.getchannel("A")))
    opaque = np.asarray(png.getchannel("A")) == 255
    difference = np.abs(np.asarray(webp.convert("RGB"), int) - np.asarray(png.convert("RGB"), int))
    assert difference[opaque].mean() < 4
    assert len(response.content) < len(u2netp_server.post("/api/bg/remove", files=upload).content)


def test_only_mask_as_webp_is_lossless(u2netp_server, sample_photo):
    upload = {"file": ("p.jpg", sample_photo.read_bytes())}
    png = image_of(u2netp_server.post("/api/bg/remove", files=upload, data={"only_mask": "true"}))
    webp = image_of(u2netp_server.post("/api/bg/remove", files=upload, data={"only_mask": "true", "format": "webp"}))
    assert np.array_equal(np.asarray(webp.convert("L")), np.asarray(png))


def test_refine_fits_the_soft_edges_and_keeps_the_rest(u2netp_server, sample_photo):
    upload = {"file": ("p.jpg", sample_photo.read_bytes())}
    plain = np.asarray(image_of(u2netp_server.post("/api/bg/remove", files=upload, data={"only_mask": "true"})))
    response = u2netp_server.post("/api/bg/remove", files=upload, data={"only_mask": "true", "refine": "true"})
    refined = np.asarray(image_answer(response, "image/png", "mask_p.png"))
    assert refined.shape == plain.shape
    changed = refined != plain
    assert changed.any()
    # Only near the edge: most of the model's certain inside and outside stays as it was.
    assert changed.mean() < 0.25 and ((plain == 255) & changed).mean() < 0.05


def test_change_color_refines_too(u2netp_server, sample_photo):
    upload = {"file": ("p.jpg", sample_photo.read_bytes())}
    plain = np.asarray(image_of(u2netp_server.post("/api/bg/change_color", files=upload,
                                                   data={"color": "blue", "format": "png"})))
    response = u2netp_server.post("/api/bg/change_color", files=upload,
                                  data={"color": "blue", "format": "png", "refine": "true"})
    refined = np.asarray(image_answer(response, "image/png", "bg_p.png"))
    assert refined.shape == plain.shape and not np.array_equal(refined, plain)


@pytest.mark.parametrize("field, value", [("only_mask", "maybe"), ("format", "gif"), ("refine", "yes")])
def test_bad_remove_options_are_400(u2netp_server, sample_photo, field, value):
    response = u2netp_server.post("/api/bg/remove", files={"file": ("p.jpg", sample_photo.read_bytes())},
                                  data={field: value})
    assert_json_error(response, 400, "bad_request")
    assert field in response.json()["error"]


def test_change_color_puts_the_subject_on_the_colour(u2netp_server, sample_photo):
    data = sample_photo.read_bytes()
    cut = image_of(u2netp_server.post("/api/bg/remove", files={"file": ("p.jpg", data)}))
    response = u2netp_server.post("/api/bg/change_color", files={"file": ("p.jpg", data)},
                                  data={"color": "#00ff00", "format": "png"})
    result = np.asarray(image_answer(response, "image/png", "bg_p.png").convert("RGB")).astype(int)
    background = np.asarray(cut.getchannel("A")) == 0
    assert np.abs(result[background] - [0, 255, 0]).max() <= 1
    # Both answers use the same subject colours (the foreground estimate, service/imaging/matting.py):
    # the composition is the cut-out laid over the colour.
    alpha = np.asarray(cut.getchannel("A"), float)[..., None] / 255
    expected = alpha * np.asarray(cut.convert("RGB"), float) + (1 - alpha) * [0, 255, 0]
    assert np.abs(result - expected).max() <= 1.5


@pytest.mark.parametrize("color", ["#00f", "0,0,255", "blue", "#0000FF"])
def test_change_color_answers_jpeg_by_default(u2netp_server, sample_photo, color):
    response = u2netp_server.post("/api/bg/change_color", files={"file": ("p.jpg", sample_photo.read_bytes())},
                                  data={"color": color})
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/jpeg"
    assert image_of(response).format == "JPEG"


def test_health(u2netp_server):
    body = u2netp_server.get("/api/bg/health").json()
    assert body["status"] == "healthy" and body["model_loaded"] is True and body["memory_mb"] > 0


def test_status(u2netp_server):
    body = u2netp_server.get("/api/bg/status").json()
    assert body["status"] == "ready" and body["model"] == "u2netp"
    assert body["memory"]["model_loaded"] is True
    assert body["memory"]["peak_rss_mb"] >= body["memory"]["rss_mb"] > 0
    assert body["max_file_size_mb"] == 8 and body["max_dimension"] == 1024
    assert {"png", "jpg", "jpeg", "webp"} <= set(body["allowed_extensions"])


def test_clear_cache_reports_memory_before_and_after(u2netp_server):
    response = u2netp_server.post("/api/bg/clear_cache")
    assert response.status_code == 200
    body = response.json()
    assert body["memory_before_mb"] > 0 and body["memory_after_mb"] > 0
    assert body["freed_mb"] == pytest.approx(max(0, body["memory_before_mb"] - body["memory_after_mb"]), abs=0.2)


def test_index_page_documents_the_api_and_has_an_upload_form(u2netp_server):
    response = u2netp_server.get("/")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")
    for text in ('type="file"', "/api/bg/remove", "/api/bg/change_color", "/api/bg/status", "u2netp"):
        assert text in response.text


def test_the_page_names_every_route_a_client_calls(app, client):
    page = client.get("/").get_data(as_text=True)
    routes = {rule.rule.split("/<")[0] for rule in app.url_map.iter_rules()
              if rule.rule != "/" and not rule.rule.startswith("/static")}
    assert routes and not [route for route in sorted(routes) if route not in page]


def test_missing_file_is_400(u2netp_server):
    assert_json_error(u2netp_server.post("/api/bg/remove", data={"x": "1"}), 400, "missing_file")


def test_empty_file_is_400(u2netp_server):
    assert_json_error(u2netp_server.post("/api/bg/remove", files={"file": ("a.png", b"")}), 400, "missing_file")


def test_text_file_is_400_not_an_image(u2netp_server):
    response = u2netp_server.post("/api/bg/remove", files={"file": ("a.png", b"plain text, not pixels")})
    assert_json_error(response, 400, "not_an_image")


def test_unsupported_format_is_415(u2netp_server):
    ico = save(Image.new("RGB", (16, 16)), "ICO")
    assert_json_error(u2netp_server.post("/api/bg/remove", files={"file": ("a.ico", ico)}), 415, "unsupported_type")


@pytest.mark.parametrize("color", ["", "nope", "300,0,0"])
def test_bad_colour_is_400(u2netp_server, sample_photo, color):
    response = u2netp_server.post("/api/bg/change_color", files={"file": ("p.jpg", sample_photo.read_bytes())},
                                  data={"color": color})
    assert_json_error(response, 400, "bad_color")


def test_bad_format_is_400(u2netp_server, sample_photo):
    response = u2netp_server.post("/api/bg/change_color", files={"file": ("p.jpg", sample_photo.read_bytes())},
                                  data={"color": "red", "format": "gif"})
    assert_json_error(response, 400, "bad_request")


def test_file_just_over_the_limit_is_413(u2netp_server):
    data = b"\0" * (8 * 1024 * 1024 + 1)
    assert_json_error(u2netp_server.post("/api/bg/remove", files={"file": ("big.png", data)}), 413, "file_too_large")


def test_body_far_over_the_limit_is_413(u2netp_server):
    data = b"\0" * (12 * 1024 * 1024)
    assert_json_error(u2netp_server.post("/api/bg/remove", files={"file": ("big.png", data)}), 413, "file_too_large")


def multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with one file field, as the standard library would send it."""
    boundary = "bg-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_oversized_upload_gets_413_json_through_urllib(u2netp_server):
    import json
    import urllib.error
    import urllib.request

    body, content_type = multipart("file", "big.jpg", b"\xff" * (9 * 1024 * 1024))
    request = urllib.request.Request(u2netp_server.url + "/api/bg/remove", data=body,
                                     headers={"Content-Type": content_type})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=60)
    assert info.value.code == 413 and info.value.headers["Content-Type"] == "application/json"
    assert json.loads(info.value.read())["code"] == "file_too_large"


def test_oversized_upload_gets_413_json_through_curl(u2netp_server, tmp_path):
    import json
    import subprocess

    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff" * (9 * 1024 * 1024))
    result = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", "-F", f"file=@{big}",
                             u2netp_server.url + "/api/bg/remove"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    body, status = result.stdout.rsplit("\n", 1)
    assert status == "413" and json.loads(body)["code"] == "file_too_large"


def test_pixel_bomb_header_is_413(u2netp_server):
    response = u2netp_server.post("/api/bg/remove", files={"file": ("bomb.png", png_header_only(65000, 65000))})
    assert_json_error(response, 413, "image_too_large")


def test_unknown_path_is_404_json(u2netp_server):
    assert_json_error(u2netp_server.get("/api/bg/nothing"), 404, "not_found")


def test_wrong_method_is_405_json(u2netp_server):
    response = u2netp_server.get("/api/bg/remove")
    assert_json_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_nothing_from_a_request_is_written_to_disk(u2netp_server):
    # Werkzeug spools uploads over 500 KB to an unnamed temporary file (O_TMPFILE),
    # invisible in any listing; count the bytes the worker passes to write() instead.
    import psutil

    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    upload = save(Image.fromarray(noise), "PNG")
    assert len(upload) > 1_000_000
    worker = psutil.Process(u2netp_server.process.pid).children()[0]
    written = worker.io_counters().write_chars
    assert u2netp_server.post("/api/bg/remove", files={"file": ("b.png", upload)}).status_code == 200
    spent = worker.io_counters().write_chars - written
    # The response goes out through write() too; a spooled upload would add its own size.
    # Socket sends are not write() calls; what remains is the access-log line.
    assert spent < 10_000, f"the worker wrote {spent} bytes while handling a {len(upload)}-byte upload"


def test_default_server_runs_isnet_general_tiny(default_server, sample_photo):
    assert default_server.get("/api/bg/status").json()["model"] == "isnet-general-tiny"
    response = default_server.post("/api/bg/remove", files={"file": ("astronaut.jpg", sample_photo.read_bytes())})
    assert response.status_code == 200 and response.headers["X-Model-Used"].startswith("isnet-general-tiny (")
    assert image_of(response).mode == "RGBA"


def test_server_without_its_model_exits_with_a_clear_message(base_env, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**base_env, "BG_REMOVAL_MODEL": "silueta", "MODEL_DIR": str(empty), "BG_MODEL_MIRROR": str(empty)}
    with pytest.raises(RuntimeError, match="could not fetch silueta") as info:
        start_server(env, tmp_path / "server.log", timeout=120)
    assert "exited with 1" in str(info.value) and "Traceback" not in str(info.value)
    last = (tmp_path / "server.log").read_text().strip().splitlines()[-1]
    assert f"the server cannot start: model silueta is not in {empty} and could not be fetched: set BG_MODEL_MIRROR" \
        in last


def test_worker_runs_with_the_malloc_settings(u2netp_server):
    import psutil

    from service.memory import MALLOC_DEFAULTS

    worker = psutil.Process(u2netp_server.process.pid).children()[0]
    environ = worker.environ()
    for name, value in MALLOC_DEFAULTS.items():
        assert environ.get(name) == value


def test_server_fetches_a_missing_model_on_start(base_env, model_dir, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "u2netp.onnx").write_bytes((model_dir / "u2netp.onnx").read_bytes())
    env = {**base_env, "BG_REMOVAL_MODEL": "u2netp", "MODEL_DIR": str(tmp_path / "models"),
           "BG_MODEL_MIRROR": str(mirror), "BG_REMOVAL_ENGINE": "onnxruntime"}  # whose u2netp is a build
    server = start_server(env, tmp_path / "server.log")
    try:
        assert server.get("/api/bg/status").json()["model"] == "u2netp"
        # built from rembg's file found in the mirror, which is not kept beside it
        assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [CATALOG["u2netp"].filename]
        assert verify(tmp_path / "models" / CATALOG["u2netp"].filename, CATALOG["u2netp"].checksum)
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("name, expected", [
    ("фото.jpg", "nobg_image.png"),
    ("../../etc/passwd.jpg", "nobg_passwd.png"),
    ('my "photo" 1.jpg', "nobg_myphoto1.png"),
])
def test_upload_names_become_safe_download_names(u2netp_server, sample_photo, name, expected):
    response = u2netp_server.post("/api/bg/remove", files={"file": (name, sample_photo.read_bytes())})
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == f'attachment; filename="{expected}"'


def test_remove_honours_a_colour_a_translucent_colour_and_refuses_a_bad_one(u2netp_server, sample_photo):
    upload = {"file": ("p.jpg", sample_photo.read_bytes())}
    opaque = image_answer(u2netp_server.post("/api/bg/remove", files=upload, data={"color": "00ff00"}),
                          "image/png", "nobg_p.png")
    assert opaque.mode == "RGB" and opaque.getpixel((508, 3))[1] > 200  # green sky
    translucent = image_answer(u2netp_server.post("/api/bg/remove", files=upload,
                                                  data={"color": "rgba(0,0,255,0.5)", "format": "webp"}),
                               "image/webp", "nobg_p.webp")
    assert translucent.mode == "RGBA" and 120 <= translucent.getpixel((508, 3))[3] <= 136
    assert_json_error(u2netp_server.post("/api/bg/remove", files=upload, data={"color": "blurple"}), 400, "bad_color")


def test_change_color_takes_transparent_webp_and_refuses_transparency_in_jpeg(u2netp_server, sample_photo):
    upload = {"file": ("p.jpg", sample_photo.read_bytes())}
    cut = image_answer(u2netp_server.post("/api/bg/change_color", files=upload,
                                          data={"color": "transparent", "format": "webp"}), "image/webp", "bg_p.webp")
    assert cut.mode == "RGBA" and cut.getpixel((508, 3))[3] == 0
    response = u2netp_server.post("/api/bg/change_color", files=upload, data={"color": "transparent"})
    assert_json_error(response, 400, "bad_color")
    assert "JPEG" in response.json()["error"]


def test_a_background_image_and_a_crop_on_our_api(u2netp_server, sample_photo):
    upload = {"file": ("p.jpg", sample_photo.read_bytes()),
              "bg_image_file": ("bg.png", save(Image.new("RGB", (64, 64), (200, 0, 0)), "PNG"))}
    image = image_answer(u2netp_server.post("/api/bg/change_color", files=upload, data={"format": "png"}),
                         "image/png", "bg_p.png")
    assert image.mode == "RGB" and image.getpixel((508, 3))[0] > 150 and image.getpixel((508, 3))[1] < 60
    plain = image_of(u2netp_server.post("/api/bg/remove", files={"file": ("p.jpg", sample_photo.read_bytes())}))
    cropped = image_of(u2netp_server.post("/api/bg/remove", files={"file": ("p.jpg", sample_photo.read_bytes())},
                                          data={"crop": "true", "crop_margin": "5%"}))
    box = main_box(plain.getchannel("A"))  # the subject's box: the haze and faint specks are no subject
    width, height = box[2] - box[0], box[3] - box[1]
    assert cropped.size == (width + 2 * round(0.05 * width), height + 2 * round(0.05 * height))
    assert_json_error(u2netp_server.post("/api/bg/remove", files={"file": ("p.jpg", sample_photo.read_bytes())},
                                         data={"crop": "true", "crop_margin": "1 2 3"}), 400, "bad_request")


def test_size_full_answers_at_the_photos_own_size_up_to_max_output_pixels(u2netp_server):
    response = u2netp_server.post("/api/bg/remove", files={"file": ("big.jpg", save(gradient(4000, 3000), "JPEG"))},
                                  data={"size": "full"})
    assert image_answer(response, "image/png", "nobg_big.png").size == (4000, 3000)
    response = u2netp_server.post("/api/bg/remove", files={"file": ("big.jpg", save(gradient(5000, 3000), "JPEG"))},
                                  data={"size": "full"})
    assert_json_error(response, 413, "image_too_large")
    assert "MAX_OUTPUT_PIXELS" in response.json()["error"]


def test_an_app_can_be_given_an_engine_another_app_loaded(app, model_dir, sample_photo):
    from service import create_app

    engine = app_state(app).model.engine
    small = create_app({"BG_REMOVAL_MODEL": "u2netp", "MODEL_DIR": str(model_dir), "MAX_DIMENSION": "200"},
                       engine=engine)
    assert app_state(small).model.engine is engine  # nothing loaded a second time
    response = small.test_client().post("/api/bg/remove", data={"file": (io.BytesIO(sample_photo.read_bytes()), "a.jpg")})
    assert response.status_code == 200 and response.headers["X-Model-Used"] == engine.label
    assert max(Image.open(io.BytesIO(response.data)).size) == 200  # the new app's own settings
