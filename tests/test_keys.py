"""API keys and their rate limits: several keys from the environment and a file, each one's limit
counted in minute windows; over real HTTP, remove.bg's X-RateLimit-* headers, a 429 in each API's
shape, and GET /v1.0/account as remove.bg's clients read it."""
from __future__ import annotations

import time

import pytest
from PIL import Image

from service.config import ConfigError, Settings
from service.http.keys import KeyFileError, KeyRing, RateLimited, read_key_file

from .support import gradient, save, start_server


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_limited_key_counts_in_minute_windows_and_an_unlimited_one_never_runs_out():
    clock = Clock(6000.0 + 50)  # 10 s before a window ends
    ring = KeyRing([("alpha", 2), ("beta", None), ("gamma", None)], default_limit=None, clock=clock)
    assert ring.required and ring.match("alpha") == 0 and ring.match("beta") == 1
    assert ring.match("alph") is None and ring.match("") is None and ring.match(None) is None
    first, second = ring.take(0), ring.take(0)
    assert (first.limit, first.remaining, first.reset) == (2, 1, 6060) and second.remaining == 0
    with pytest.raises(RateLimited) as refused:
        ring.take(0)
    assert refused.value.status == 429 and refused.value.retry_after == 10
    assert refused.value.headers() == {"X-RateLimit-Limit": "2", "X-RateLimit-Remaining": "0",
                                       "X-RateLimit-Reset": "6060", "Retry-After": "10"}
    assert ring.peek(0).remaining == 0  # a refusal uses nothing up
    assert all(ring.take(1) is None for _ in range(100))  # no limit of its own, none by default
    clock.now = 6060.0  # the next window
    assert ring.take(0).remaining == 1 and ring.peek(0).reset == 6120
    limited_by_default = KeyRing([("alpha", None), ("beta", 5)], default_limit=1, clock=clock)
    assert limited_by_default.take(0).limit == 1 and limited_by_default.take(1).limit == 5
    assert not KeyRing([], None).required


def test_keys_come_from_api_key_api_keys_and_a_file(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# shop front\nk-file-1 30\n\nk-file-2   # no limit of its own\nk-both 5\n")
    settings = Settings.from_env({"API_KEY": "k-one", "API_KEYS": "k-two, k-both", "API_KEYS_FILE": str(keys),
                                  "RATE_LIMIT_PER_MINUTE": "100"})
    assert settings.api_keys == (("k-one", None), ("k-two", None), ("k-both", 5), ("k-file-1", 30),
                                 ("k-file-2", None))
    assert settings.rate_limit == 100 and "k-one" not in repr(settings)
    assert Settings.from_env({}).api_keys == () and Settings.from_env({}).rate_limit is None


@pytest.mark.parametrize("text, message", [
    ("k1 ten\n", "line 1"), ("k1\nk2 0\n", "line 2"), ("k1 5 6\n", "line 1")])
def test_a_bad_key_file_line_is_named(tmp_path, text, message):
    keys = tmp_path / "keys"
    keys.write_text(text)
    with pytest.raises(KeyFileError, match=message):
        read_key_file(keys)


@pytest.mark.parametrize("env, message", [
    ({"RATE_LIMIT_PER_MINUTE": "10"}, "limits each API key"),
    ({"API_KEYS_FILE": "/no/such/file"}, "cannot be read"),
    ({"API_KEY": "k", "RATE_LIMIT_PER_MINUTE": "-1"}, "RATE_LIMIT_PER_MINUTE"),
])
def test_bad_key_settings_stop_the_start(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


LIMITED, OPEN, LEGACY = "k-limited-3", "k-open", "k-legacy"


@pytest.fixture(scope="module")
def limited_server(base_env, tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    (folder / "keys").write_text(f"{LIMITED} 3\n{OPEN}\n")
    server = start_server({**base_env, "BG_REMOVAL_MODEL": "u2netp", "API_KEY": LEGACY,
                           "API_KEYS_FILE": str(folder / "keys")}, folder / "server.log")
    yield server
    server.stop()


def a_fresh_window() -> None:
    """Wait, if need be, so that the next 15 s lie in one minute window."""
    left = 60 - time.time() % 60
    if left < 15:
        time.sleep(left + 0.1)


def test_a_key_past_its_limit_gets_429_with_remove_bg_s_headers_on_both_apis(limited_server):
    photo = save(gradient(64, 48), "PNG")
    a_fresh_window()
    started = time.time()
    answers = [limited_server.post("/api/bg/remove", files={"file": ("p.png", photo)}, headers={"X-API-Key": LIMITED}),
               limited_server.post("/api/bg/batch", files=[("file", ("p.png", photo))],
                                   headers={"X-API-Key": LIMITED}),
               limited_server.post("/v1.0/removebg", files={"image_file": ("p.png", photo)},
                                   headers={"X-Api-Key": LIMITED})]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0"]
    reset = int(answers[0].headers["X-RateLimit-Reset"])
    assert answers[0].headers["X-RateLimit-Limit"] == "3" and reset % 60 == 0 and 0 < reset - started <= 60

    refused = limited_server.post("/api/bg/remove", files={"file": ("p.png", photo)}, headers={"X-API-Key": LIMITED})
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
    assert refused.headers["X-RateLimit-Remaining"] == "0" and refused.headers["X-RateLimit-Reset"] == str(reset)
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    removebg = limited_server.post("/v1.0/removebg", files={"image_file": ("p.png", photo)},
                                   headers={"X-Api-Key": LIMITED})
    assert removebg.status_code == 429 and removebg.json()["errors"][0]["code"] == "rate_limit_exceeded"
    assert removebg.headers["Retry-After"] and removebg.headers["X-RateLimit-Limit"] == "3"

    # the other keys are their own: one without a limit, and the old single API_KEY
    for key in (OPEN, LEGACY):
        answer = limited_server.post("/api/bg/remove", files={"file": ("p.png", photo)}, headers={"X-API-Key": key})
        assert answer.status_code == 200 and "X-RateLimit-Limit" not in answer.headers
    wrong = limited_server.post("/api/bg/remove", files={"file": ("p.png", photo)}, headers={"X-API-Key": "nope"})
    assert wrong.status_code == 401
    # reading the status, health and the account never counts
    assert limited_server.get("/api/bg/status").status_code == 200


def test_the_account_call_answers_in_remove_bg_s_shape_with_what_is_true_here(limited_server):
    a_fresh_window()
    limited_server.post("/api/bg/remove", files={"file": ("p.png", save(Image.new("RGB", (16, 16)), "PNG"))},
                        headers={"X-API-Key": LIMITED})
    account = limited_server.get("/v1.0/account", headers={"X-Api-Key": LIMITED})
    assert account.status_code == 200
    attributes = account.json()["data"]["attributes"]  # what remove-bg/ruby's AccountInfo reads
    assert attributes["credits"] == {"total": 0, "subscription": 0, "payg": 0, "enterprise": 0}
    left = int(account.headers["X-RateLimit-Remaining"])
    assert attributes["api"] == {"free_calls": left, "sizes": "all"} and left <= 2
    again = limited_server.get("/v1.0/account", headers={"X-Api-Key": LIMITED})
    assert again.json()["data"]["attributes"]["api"]["free_calls"] == left  # asking costs nothing
    unlimited = limited_server.get("/v1.0/account", headers={"X-Api-Key": OPEN}).json()
    assert unlimited["data"]["attributes"]["api"]["free_calls"] == 1_000_000
    refused = limited_server.get("/v1.0/account", headers={"X-Api-Key": "nope"})
    assert refused.status_code == 403 and refused.json()["errors"][0]["code"] == "auth_failed"


def test_the_account_call_on_an_open_server(u2netp_server):
    answer = u2netp_server.get("/v1.0/account")
    assert answer.status_code == 200 and answer.json()["data"]["attributes"]["api"]["free_calls"] == 1_000_000
