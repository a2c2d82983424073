"""Property: whatever bytes arrive, decoding gives a sane image or a 4xx error, nothing else."""
from __future__ import annotations

import io

import pillow_heif
from hypothesis import HealthCheck, given, settings, strategies as st

from service.errors import ServiceError
from service.imaging.decode import decode_upload

from .support import gradient



def _seeds() -> list[bytes]:
    image = gradient(24, 16)
    out = []
    for fmt, mode in (("PNG", "RGBA"), ("JPEG", "RGB"), ("GIF", "P"), ("WEBP", "RGB"), ("BMP", "RGB"),
                      ("TIFF", "CMYK"), ("PNG", "I;16"), ("AVIF", "RGBA")):
        buf = io.BytesIO()
        (image.convert("L").convert(mode) if mode == "I;16" else image.convert(mode)).save(buf, fmt)
        out.append(buf.getvalue())
    buf = io.BytesIO()
    pillow_heif.from_pillow(image.convert("RGB")).save(buf)  # HEIC, as pi-heif reads it in the server
    out.append(buf.getvalue())
    return out


SEEDS = _seeds()
FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def decodes_or_refuses(data: bytes) -> None:
    try:
        decoded = decode_upload(data, max_dimension=64, max_pixels=100_000)
    except ServiceError as exc:
        assert 400 <= exc.status < 500, exc
        return
    assert decoded.rgb.mode == "RGB" and 1 <= max(decoded.rgb.size) <= 64
    assert decoded.alpha is None or decoded.alpha.size == decoded.rgb.size


@FUZZ
@given(seed=st.sampled_from(SEEDS),
       edits=st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), max_size=12),
       keep=st.floats(0.0, 1.0))
def test_mutated_images_decode_or_get_a_4xx(seed, edits, keep):
    data = bytearray(seed)
    for position, value in edits:
        data[position % len(data)] = value
    decodes_or_refuses(bytes(data[: max(1, int(len(data) * keep))]))


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_decode_or_get_a_4xx(data):
    decodes_or_refuses(data)
