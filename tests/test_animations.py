"""Animated GIF, WebP and APNG in give animated answers of every frame, with the input's timing
and loop, under a frame count and a pixel budget; over real HTTP."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.errors import ImageTooLarge
from service.imaging.decode import open_animation

from .support import many_frames_gif

FRAMES, STEP = 8, 12


@pytest.fixture(scope="module")
def subject(sample_photo) -> Image.Image:
    with Image.open(sample_photo) as image:
        return image.convert("RGB").resize((200, 200))


def moving(subject: Image.Image, fmt: str, frames: int = FRAMES) -> bytes:
    """An animation of the photo sliding STEP px right a frame over a plain blue field, 80 +
    10·i ms a frame, looping twice."""
    images = []
    for index in range(frames):
        frame = Image.new("RGB", (320, 220), (30, 110, 210))
        frame.paste(subject, (10 + STEP * index, 10))
        images.append(frame)
    buffer = io.BytesIO()
    images[0].save(buffer, fmt, save_all=True, append_images=images[1:],
                   duration=[80 + 10 * i for i in range(frames)], loop=2)
    return buffer.getvalue()


def frames_of(data: bytes) -> list[tuple[np.ndarray, int]]:
    """Each frame's alpha and duration (ms)."""
    out = []
    with Image.open(io.BytesIO(data)) as image:
        for index in range(image.n_frames):
            image.seek(index)
            image.load()
            out.append((np.asarray(image.convert("RGBA").getchannel("A")), int(image.info["duration"])))
    return out


@pytest.mark.parametrize("source, answer", [("GIF", "png"), ("WEBP", "webp"), ("PNG", "png"), ("GIF", "avif")])
def test_every_frame_is_cut_out_and_the_timing_and_loop_are_kept(u2netp_server, subject, source, answer):
    response = u2netp_server.post("/api/bg/remove", files={"file": (f"a.{source.lower()}", moving(subject, source))},
                                  data={"format": answer})
    assert response.status_code == 200, response.text
    assert response.headers["X-Frames"] == str(FRAMES) and response.headers["Content-Type"] == f"image/{answer}"
    frames = frames_of(response.content)
    assert len(frames) == FRAMES
    # GIF keeps centiseconds: 80, 90, … ms survive exactly
    assert [duration for _, duration in frames] == [80 + 10 * i for i in range(FRAMES)]
    if answer != "avif":  # Pillow's AVIF writer has no loop count
        with Image.open(io.BytesIO(response.content)) as image:
            assert image.info["loop"] == 2
    lefts = [int(np.argmax((alpha > 128).any(axis=0))) for alpha, _ in frames]
    steps = np.diff(lefts)
    assert abs(np.median(steps) - STEP) <= 2, lefts  # the cut-out follows the subject frame by frame
    assert all(alpha[:, -8:].max() < 30 for alpha, _ in frames)  # the blue field at the right is gone


def test_frames_first_and_stills_answer_one_frame(u2netp_server, subject):
    gif = moving(subject, "GIF")
    still = u2netp_server.post("/api/bg/remove", files={"file": ("a.gif", gif)}, data={"frames": "first"})
    assert still.status_code == 200 and "X-Frames" not in still.headers
    with Image.open(io.BytesIO(still.content)) as image:
        assert getattr(image, "n_frames", 1) == 1
    removebg = u2netp_server.post("/v1.0/removebg", files={"image_file": ("a.gif", gif)}, data={"format": "png"})
    assert removebg.status_code == 200 and "X-Frames" not in removebg.headers  # remove.bg answers stills


def test_an_animation_on_a_colour_asks_for_a_format_that_animates(u2netp_server, subject):
    gif = moving(subject, "GIF")
    jpeg = u2netp_server.post("/api/bg/change_color", files={"file": ("a.gif", gif)}, data={"color": "white"})
    assert jpeg.status_code == 400 and "frames=first" in jpeg.json()["error"]
    png = u2netp_server.post("/api/bg/change_color", files={"file": ("a.gif", gif)},
                             data={"color": "white", "format": "png", "outline_width": "4"})
    assert png.status_code == 200 and png.headers["X-Frames"] == str(FRAMES)
    cropped = u2netp_server.post("/api/bg/remove", files={"file": ("a.gif", gif)}, data={"crop": "true"})
    assert cropped.status_code == 400


def test_too_many_frames_or_pixels_is_a_413_before_any_frame_is_decoded(u2netp_server, subject):
    answer = u2netp_server.post("/api/bg/remove", files={"file": ("many.gif", many_frames_gif(10_000))})
    assert answer.status_code == 413 and answer.json()["code"] == "animation_too_large"
    assert "10,000 frames" in answer.json()["error"] and "MAX_FRAMES" in answer.json()["error"]
    with pytest.raises(ImageTooLarge, match="MAX_ANIMATION_PIXELS"):  # 8 frames of 320×220, a 0.5 MP budget
        open_animation(moving(subject, "GIF"), 40_000_000, 100, 500_000, 1024)
    assert open_animation(moving(subject, "GIF", frames=1), 40_000_000, 100, 500_000, 1024) is None  # a still
