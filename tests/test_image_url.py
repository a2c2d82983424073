"""remove.bg's image_url and bg_image_url, with ALLOW_IMAGE_URL: real downloads from a web server
on loopback (trusted by IMAGE_URL_ALLOW_NETWORKS for these tests), and the addresses, schemes,
redirects, sizes and delays that must be refused or cut off."""
from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from service.http.download import UrlRefused, download

from .support import ImageHost, save, start_server
from .test_removebg import errors_of

LIMIT_MB = 1


@pytest.fixture(scope="module")
def host(sample_photo):
    """The photo's web server on 127.0.0.1, the only address the url_server trusts."""
    host = ImageHost("127.0.0.1")
    host.files["/photo.jpg"] = sample_photo.read_bytes()
    host.files["/red.png"] = save(Image.new("RGB", (300, 200), (220, 10, 10)), "PNG")
    host.files["/big.jpg"] = b"\xff" * (LIMIT_MB * 2**20 + 1)
    host.files["/exactly-the-limit.bin"] = b"\0" * (LIMIT_MB * 2**20)
    host.slow.add("/slow.jpg")
    yield host
    host.close()


@pytest.fixture(scope="module")
def other_host():
    """A web server on 127.0.0.2: loopback too, but not trusted; it must never be asked."""
    host = ImageHost("127.0.0.2")
    host.files["/photo.jpg"] = b"never served"
    yield host
    host.close()


@pytest.fixture(scope="module")
def url_server(base_env, tmp_path_factory):
    env = {**base_env, "BG_REMOVAL_MODEL": "u2netp", "ALLOW_IMAGE_URL": "true",
           "IMAGE_URL_ALLOW_NETWORKS": "127.0.0.1/32", "IMAGE_URL_TIMEOUT_S": "3",
           "MAX_FILE_SIZE_MB": str(LIMIT_MB)}
    server = start_server(env, tmp_path_factory.mktemp("url-server") / "server.log")
    yield server
    server.stop()


def alpha_of(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)).getchannel("A"))


def test_an_image_url_gives_the_same_cut_out_as_the_upload(url_server, host, sample_photo):
    by_url = url_server.post("/v1.0/removebg", data={"image_url": f"{host.url}/photo.jpg"})
    by_file = url_server.post("/v1.0/removebg", files={"image_file": ("p.jpg", sample_photo.read_bytes())})
    assert np.array_equal(alpha_of(by_url), alpha_of(by_file))
    assert "/photo.jpg" in host.requests


def test_a_background_by_url_and_a_json_body(url_server, host):
    response = url_server.post("/v1.0/removebg", json={"image_url": f"{host.url}/photo.jpg",
                                                       "bg_image_url": f"{host.url}/red.png"})
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/jpeg"
    image = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    assert tuple(image[:8, -8:].reshape(-1, 3).mean(axis=0) > 150) == (True, False, False)  # red behind


def test_a_redirect_to_the_photo_is_followed(url_server, host):
    host.redirects["/moved"] = "/photo.jpg"
    response = url_server.post("/v1.0/removebg", data={"image_url": f"{host.url}/moved", "channels": "alpha"})
    assert response.status_code == 200 and Image.open(io.BytesIO(response.content)).mode == "L"


@pytest.mark.parametrize("url", [
    "http://127.0.0.2:{port}/photo.jpg",        # loopback, not in IMAGE_URL_ALLOW_NETWORKS
    "http://169.254.169.254/latest/meta-data",  # a cloud's metadata address (link-local)
    "http://10.1.2.3/photo.jpg", "http://192.168.0.1/photo.jpg", "http://100.64.0.1/photo.jpg",
    "http://[::1]:{port}/photo.jpg", "http://[::ffff:127.0.0.2]:{port}/photo.jpg", "http://0.0.0.0:{port}/",
    "http://224.0.0.1/photo.jpg",
    "file:///etc/passwd", "ftp://127.0.0.1/photo.jpg", "gopher://127.0.0.1:70/", "http:///photo.jpg",
])
def test_private_addresses_and_other_schemes_are_refused_before_any_request(url_server, other_host, url):
    port = other_host.url.rsplit(":", 1)[1]
    response = url_server.post("/v1.0/removebg", data={"image_url": url.format(port=port)})
    errors_of(response, 400, "invalid_image_url")
    assert other_host.requests == []


def test_a_redirect_to_an_untrusted_address_is_refused_and_never_followed(url_server, host, other_host):
    host.redirects["/to-other"] = f"{other_host.url}/photo.jpg"
    response = url_server.post("/v1.0/removebg", data={"image_url": f"{host.url}/to-other"})
    assert "127.0.0.2" in errors_of(response, 400, "invalid_image_url")
    assert other_host.requests == []


def test_failed_downloads_are_the_clients_error_and_bounded(url_server, host):
    host.redirects["/loop"] = "/loop"
    for path, words in (("/missing.jpg", "404"), ("/loop", "redirects"), ("/slow.jpg", "longer than 3 s")):
        started = time.monotonic()
        response = url_server.post("/v1.0/removebg", data={"image_url": host.url + path})
        assert words in errors_of(response, 400, "failed_to_download")
        # the 3 s bound holds while the host trickles a byte a second (for 30 s); the margin is a busy machine's
        assert time.monotonic() - started < 10, path
    response = url_server.post("/v1.0/removebg", data={"image_url": f"{host.url}/big.jpg"})
    errors_of(response, 413, "file_too_large")
    # a file of exactly the limit is read whole (and then refused as no image)
    errors_of(url_server.post("/v1.0/removebg", data={"image_url": f"{host.url}/exactly-the-limit.bin"}),
              400, "not_an_image")
    assert url_server.get("/api/bg/health").status_code == 200


def test_two_sources_at_once_are_refused(url_server, host, sample_photo):
    response = url_server.post("/v1.0/removebg", data={"image_url": f"{host.url}/photo.jpg"},
                               files={"image_file": ("p.jpg", sample_photo.read_bytes())})
    assert "one of" in errors_of(response, 400, "invalid_parameters")
    response = url_server.post("/v1.0/removebg", data={"image_url": f"{host.url}/photo.jpg", "bg_color": "red",
                                                       "bg_image_url": f"{host.url}/red.png"})
    assert "one of" in errors_of(response, 400, "invalid_parameters")


def test_without_allow_image_url_urls_are_refused(u2netp_server, host, sample_photo):
    asked = len(host.requests)
    response = u2netp_server.post("/v1.0/removebg", data={"image_url": f"{host.url}/photo.jpg"})
    assert "ALLOW_IMAGE_URL" in errors_of(response, 400, "invalid_parameters")
    response = u2netp_server.post("/v1.0/removebg", data={"bg_image_url": f"{host.url}/red.png"},
                                  files={"image_file": ("p.jpg", sample_photo.read_bytes())})
    assert "ALLOW_IMAGE_URL" in errors_of(response, 400, "invalid_parameters")
    assert len(host.requests) == asked


def test_a_host_name_is_checked_by_every_address_it_resolves_to():
    # "localhost" is loopback: refused even though it is a name, not an address
    with pytest.raises(UrlRefused, match="127.0.0.1|::1"):
        download("http://localhost:9/photo.jpg", 1000, 2)


def test_rembgs_get_route_fetches_the_url_as_rembg_s_does(url_server, host, other_host):
    """GET /api/remove?url=: rembg's server's route, under the same guard as image_url."""
    answer = url_server.get("/api/remove", params={"url": host.url + "/photo.jpg", "om": "true"})
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/png"
    with Image.open(io.BytesIO(answer.content)) as mask:
        assert mask.mode == "L" and mask.size == (512, 512)
    refused = url_server.get("/api/remove", params={"url": other_host.url + "/photo.jpg"})
    assert refused.status_code == 400 and "detail" in refused.json() and other_host.requests == []
    assert url_server.get("/api/remove").json() == {"detail": "no url: give the photo's address as ?url="}


def test_rembgs_get_route_is_off_where_image_urls_are(u2netp_server, host):
    answer = u2netp_server.get("/api/remove", params={"url": host.url + "/photo.jpg"})
    assert answer.status_code == 400 and "ALLOW_IMAGE_URL" in answer.json()["detail"]
