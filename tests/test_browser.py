"""The page at /, driven in headless Chromium (Debian's package) by Playwright, like a person would."""
from __future__ import annotations

import base64
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from .support import API_KEY

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


def put_file(page, path, event: str) -> None:
    """Hand the page a file as a drop or a paste would, from the file's bytes."""
    data = base64.b64encode(path.read_bytes()).decode()
    page.evaluate("""([data, name, event]) => {
      const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
      const transfer = new DataTransfer();
      transfer.items.add(new File([bytes], name, {type: 'image/jpeg'}));
      const e = event === 'drop' ? new DragEvent('drop', {dataTransfer: transfer, bubbles: true})
                                 : new ClipboardEvent('paste', {clipboardData: transfer, bubbles: true});
      document.dispatchEvent(e);
    }""", [data, path.name, event])


@pytest.mark.parametrize("event", ["drop", "paste"])
def test_a_dropped_or_pasted_photo_is_processed(page, sample_photo, event):
    assert page.is_hidden("#before") and page.is_hidden("#after")  # no broken-image placeholders
    put_file(page, sample_photo, event)
    page.wait_for_function("() => !document.getElementById('before').hidden")
    page.click("#submit")
    wait_for_result(page)
    assert page.evaluate(TRANSPARENT_SHARE) > 0.2


def test_crop_makes_the_result_the_subjects_size(page, photos):
    page.set_input_files("#file", str(photos["coffee"]))  # a cup in the middle of a 600×400 table
    page.check("#crop")
    page.click("#submit")
    wait_for_result(page)
    width, height = page.evaluate("() => [document.getElementById('after').naturalWidth, "
                                  "document.getElementById('after').naturalHeight]")
    assert width < 500 and height <= 400


def test_the_product_photo_options_shape_the_answer(page, sample_photo):
    page.set_input_files("#file", str(sample_photo))
    page.select_option("#canvas", "1200x1600")
    page.select_option("#shadow", "contact")
    page.fill("#outline", "8")
    page.select_option("#format", "avif")
    page.click("#submit")
    wait_for_result(page)
    size = page.evaluate("() => [document.getElementById('after').naturalWidth, "
                         "document.getElementById('after').naturalHeight]")
    assert size == [1200, 1600]  # the canvas, decoded by the browser from an AVIF answer
    assert page.get_attribute("#download", "download").endswith(".avif")
    assert 0.3 < page.evaluate(TRANSPARENT_SHARE) < 0.95  # a subject with a border on a clear canvas
    page.select_option("#canvas", "")
    page.check("#blur")
    before = page.get_attribute("#after", "src")
    page.click("#submit")
    page.wait_for_function("(before) => document.getElementById('after').src !== before", arg=before,
                           timeout=60_000)
    wait_for_result(page)
    assert page.evaluate(TRANSPARENT_SHARE) == 0  # the blurred photo behind: nothing transparent
    page.check("#use-color")
    page.click("#submit")
    page.wait_for_function("() => document.getElementById('error').textContent.includes('bg_blur')")


def test_full_size_answers_at_the_photos_own_size(page, tmp_path):
    from .support import gradient

    big = tmp_path / "big.jpg"
    gradient(1600, 1200).save(big, "JPEG")
    page.set_input_files("#file", str(big))
    page.check("#full-size")
    page.click("#submit")
    wait_for_result(page)
    size = page.evaluate("() => [document.getElementById('after').naturalWidth, "
                         "document.getElementById('after').naturalHeight]")
    assert size == [1600, 1200]  # not the 1024 px of the default


def test_a_photo_over_the_size_limit_is_refused_before_upload(page, tmp_path):
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff" * (9 * 1024 * 1024))
    requests_sent = []
    page.on("request", lambda r: requests_sent.append(r.url) if r.method == "POST" else None)
    page.set_input_files("#file", str(big))
    assert "limit is 8 MB" in page.text_content("#error")
    page.click("#submit")
    page.wait_for_timeout(300)
    assert requests_sent == []


KEY = API_KEY


def test_with_api_key_set_the_page_asks_for_the_key_and_keeps_it_for_the_tab(browser, keyed_server, sample_photo):
    page = browser.new_page()
    try:
        page.goto(keyed_server.url + "/")
        assert page.is_visible("#api-key")
        page.set_input_files("#file", str(sample_photo))
        page.fill("#api-key", "wrong")
        page.dispatch_event("#api-key", "change")
        page.click("#submit")
        page.wait_for_function("() => document.getElementById('error').textContent.length > 0", timeout=30_000)
        assert "X-API-Key" in page.text_content("#error")
        page.fill("#api-key", KEY)
        page.dispatch_event("#api-key", "change")
        page.click("#submit")
        wait_for_result(page)
        assert page.evaluate(TRANSPARENT_SHARE) > 0.2
        page.reload()
        assert page.input_value("#api-key") == KEY  # session storage, this tab only
    finally:
        page.close()


def test_without_api_key_the_page_has_no_key_field(page):
    assert page.query_selector("#api-key") is None


def test_the_page_says_when_the_mask_looks_wrong(page, sample_photo, tmp_path):
    """X-Mask-Warning, shown to the person on the page: noise has no single subject (uncertain);
    a good photo clears the warning again."""
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(noise)
    page.set_input_files("#file", str(noise))
    page.click("#submit")
    wait_for_result(page)
    page.wait_for_function("() => !document.getElementById('warning').hidden", timeout=30_000)
    assert "the model is unsure of this photo" in page.text_content("#warning")
    assert "confidence 0." in page.text_content("#warning")
    page.set_input_files("#file", str(sample_photo))  # a photo with one clear subject: no warning
    page.click("#submit")
    page.wait_for_function("() => document.getElementById('time').textContent !== ''"
                           " && !document.getElementById('submit').disabled", timeout=60_000)
    assert page.is_hidden("#warning")
