"""API key, CORS, request ids and the per-request JSON log, on a live server."""
from __future__ import annotations



from .support import API_KEY, CORS_ORIGIN, log_entries

KEY, ORIGIN = API_KEY, CORS_ORIGIN


def test_post_without_or_with_a_wrong_key_is_401(keyed_server, sample_photo):
    for headers in ({}, {"X-API-Key": "wrong"}):
        response = keyed_server.post("/api/bg/remove", files={"file": ("p.jpg", sample_photo.read_bytes())},
                                       headers=headers)
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"
    assert keyed_server.post("/api/bg/clear_cache").status_code == 401


def test_post_with_the_key_is_served(keyed_server, sample_photo):
    response = keyed_server.post("/api/bg/remove", files={"file": ("p.jpg", sample_photo.read_bytes())},
                                   headers={"X-API-Key": KEY})
    assert response.status_code == 200


def test_reads_need_no_key(keyed_server):
    assert keyed_server.get("/api/bg/health").status_code == 200
    assert keyed_server.get("/api/bg/status").status_code == 200


def test_the_key_is_never_logged(keyed_server, sample_photo):
    keyed_server.post("/api/bg/clear_cache", headers={"X-API-Key": KEY})
    assert KEY not in keyed_server.log.read_text()


def test_cors_allows_only_the_configured_origin(keyed_server):
    allowed = keyed_server.get("/api/bg/status", headers={"Origin": ORIGIN})
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    other = keyed_server.get("/api/bg/status", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_cors_preflight_names_the_api_key_header(keyed_server):
    import requests  # a plain OPTIONS, as a browser sends it

    response = requests.options(keyed_server.url + "/api/bg/remove", timeout=10, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "X-API-Key"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "X-API-Key" in response.headers["Access-Control-Allow-Headers"]


def test_cors_is_off_by_default(u2netp_server):
    response = u2netp_server.get("/api/bg/status", headers={"Origin": ORIGIN})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_request_id_is_made_or_echoed(u2netp_server):
    made = u2netp_server.get("/api/bg/health").headers["X-Request-Id"]
    assert len(made) == 32
    assert u2netp_server.get("/api/bg/health", headers={"X-Request-Id": "abc-123"}).headers["X-Request-Id"] == "abc-123"
    odd = u2netp_server.get("/api/bg/health", headers={"X-Request-Id": "bad id\twith spaces"})
    assert odd.headers["X-Request-Id"] != "bad id\twith spaces" and len(odd.headers["X-Request-Id"]) == 32


def test_each_request_logs_one_json_line(u2netp_server, sample_photo):
    data = sample_photo.read_bytes()
    response = u2netp_server.post("/api/bg/remove", files={"file": ("p.jpg", data)},
                                  headers={"X-Request-Id": "log-line-test"})
    entries = [e for e in log_entries(u2netp_server) if e["request_id"] == "log-line-test"]
    assert len(entries) == 1
    entry = entries[0]
    assert entry["route"] == "/api/bg/remove" and entry["method"] == "POST" and entry["status"] == 200
    assert entry["bytes_in"] > len(data) and entry["bytes_out"] == len(response.content)
    assert entry["pixels"] == 512 * 512 and entry["model_ms"] > 0  # the astronaut photo
    assert entry["total_ms"] >= entry["model_ms"] and entry["rss_mb"] > 0


def test_errors_are_logged_too(u2netp_server):
    u2netp_server.post("/api/bg/remove", data={"x": "1"}, headers={"X-Request-Id": "log-error-test"})
    entry = next(e for e in log_entries(u2netp_server) if e["request_id"] == "log-error-test")
    assert entry["status"] == 400


def test_the_app_needs_no_secret_key(app):
    assert app.secret_key is None and app.config["SECRET_KEY"] is None
