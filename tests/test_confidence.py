"""X-Mask-Confidence and X-Mask-Warning: read from the mask alone."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from service.imaging.confidence import mask_confidence


def disc(blur: float = 0) -> Image.Image:
    mask = Image.new("L", (200, 200), 0)
    ImageDraw.Draw(mask).ellipse((50, 50, 150, 150), fill=255)
    return mask.filter(ImageFilter.GaussianBlur(blur)) if blur else mask


def test_a_crisp_subject_is_trusted():
    confidence, warning = mask_confidence(disc(1))
    assert confidence > 0.8 and warning is None  # a 1 px soft edge on a 100 px disc


def test_a_soft_subject_is_flagged_uncertain():
    confidence, warning = mask_confidence(disc(25))
    assert confidence < 0.45 and warning == "uncertain"


def test_empty_and_full_masks_are_flagged():
    assert mask_confidence(Image.new("L", (100, 100), 0)) == (0.0, "empty")
    assert mask_confidence(Image.new("L", (100, 100), 255))[1] == "full"


def test_a_subject_in_many_pieces_is_flagged_fragmented():
    checks = (np.indices((200, 200)).sum(axis=0) // 4 % 2 * 255).astype(np.uint8)
    assert mask_confidence(Image.fromarray(checks))[1] == "fragmented"


def test_answers_carry_the_confidence(u2netp_server, sample_photo):
    for path, field in (("/api/bg/remove", "file"), ("/v1.0/removebg", "image_file")):
        response = u2netp_server.post(path, files={field: ("p.jpg", sample_photo.read_bytes())})
        assert response.status_code == 200
        assert 0.5 < float(response.headers["X-Mask-Confidence"]) <= 1  # a clear portrait
        assert "X-Mask-Warning" not in response.headers
