"""The page at /, driven in headless Chromium (Debian's package) by Playwright, like a person would."""
from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags for a machine with no network but loopback: no background fetches, no sandbox as root.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
         "--disable-background-networking", "--disable-component-update"]

TRANSPARENT_SHARE = """() => {
  const img = document.getElementById('after');
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let clear = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] === 0) clear++;
  return clear / (canvas.width * canvas.height);
}"""


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, u2netp_server):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(u2netp_server.url + "/")
    yield page
    page.close()


def wait_for_result(page) -> None:
    page.wait_for_function("() => { const i = document.getElementById('after');"
                           " return i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0; }",
                           timeout=60_000)


def test_page_removes_a_background_and_shows_model_time_and_memory(page, sample_photo, tmp_path):
    assert page.text_content("#model") == "u2netp"
    page.wait_for_function("() => document.getElementById('rss').textContent.endsWith('MB')")
    page.set_input_files("#file", str(sample_photo))
    page.click("#submit")
    wait_for_result(page)
    assert page.evaluate(TRANSPARENT_SHARE) > 0.2
    assert page.text_content("#time").endswith(" ms")
    assert page.get_attribute("#download", "download") == "nobg_astronaut.png"
    assert page.is_visible("#download")
    shot = tmp_path / "page-after-upload.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nscreenshot: {shot}")
    assert shot.stat().st_size > 10_000


def test_page_puts_the_subject_on_a_chosen_colour(page, sample_photo):
    page.set_input_files("#file", str(sample_photo))
    page.check("#use-color")
    page.fill("#color", "#00ff00")
    page.click("#submit")
    wait_for_result(page)
    assert page.evaluate(TRANSPARENT_SHARE) == 0
    assert page.get_attribute("#download", "download") == "bg_astronaut.png"


def test_page_shows_the_servers_error_message(page, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    page.set_input_files("#file", str(bad))
    page.click("#submit")
    page.wait_for_function("() => document.getElementById('error').textContent.length > 0", timeout=30_000)
    assert "not an image" in page.text_content("#error")


def test_page_refines_the_edges_when_ticked(page, sample_photo):
    alpha_sum = TRANSPARENT_SHARE.replace("if (data[i] === 0) clear++", "clear += data[i]")
    page.set_input_files("#file", str(sample_photo))
    page.click("#submit")
    wait_for_result(page)
    plain = page.evaluate(alpha_sum)
    page.check("#refine")
    with page.expect_response("**/api/bg/remove") as answered:
        page.click("#submit")
    assert answered.value.status == 200
    page.wait_for_function("() => document.getElementById('submit').disabled === false", timeout=60_000)
    wait_for_result(page)
    refined = page.evaluate(alpha_sum)
    assert refined != plain and abs(refined - plain) / plain < 0.1


def test_an_oversized_upload_answers_413_json_to_fetch(page):
    answer = page.evaluate("""async () => {
      const form = new FormData();
      form.append('file', new Blob([new Uint8Array(9 * 1024 * 1024)]), 'big.jpg');
      const response = await fetch('/api/bg/remove', {method: 'POST', body: form});
      return {status: response.status, body: await response.json()};
    }""")
    assert answer["status"] == 413 and answer["body"]["code"] == "file_too_large"
