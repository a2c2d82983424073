"""``bench --effects``: what each operation drawn after the cut-out (shadow, outline, canvas,
background blur) adds to a 12 MP answer's peak memory and time, in process.

Each row runs in a fresh process: the model loaded, one warm run of the plain full-size answer
(its ru_maxrss is the baseline), then one run with the operation; "added peak" is how far the
second run raised ru_maxrss past the first. The photo is the first of the photos given, scaled to
4000×3000 and sent as a JPEG.
"""
from __future__ import annotations

import io
import multiprocessing
import resource
import time
from pathlib import Path

from .bench import _table, cpu_description, load_payloads

SIDE = (4000, 3000)
OPERATIONS = {
    "none": {},
    "shadow=drop": {"shadow": "drop"},
    "outline_width=20": {"outline_width": 20},
    "output_size=4000x3000, padding=5%": {"canvas": SIDE, "padding": (200, 150)},
    "bg_blur=2": {"bg_blur": 0.02},
    "all but blur": {"canvas": SIDE, "padding": (200, 150), "outline_width": 20, "shadow": "drop"},
}


def _photo(photos: Path | None) -> bytes:
    from PIL import Image

    name, data = load_payloads(photos)[0]
    with Image.open(io.BytesIO(data)) as image:
        buffer = io.BytesIO()
        image.convert("RGB").resize(SIDE, Image.Resampling.LANCZOS).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _measure(model: str, data: bytes, extra: dict, out) -> None:
    import os

    from service import load_engine
    from service.config import Settings
    from service.pipeline import Options, cut_out

    settings = Settings.from_env({**os.environ, "BG_REMOVAL_MODEL": model})
    engine = load_engine(model, settings)
    full = {"fmt": "png", "output_pixels": settings.max_output_pixels, "shrink_to_fit": False}
    started = time.perf_counter()
    cut_out(data, engine, settings, Options(**full))
    plain = time.perf_counter() - started
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    cut_out(data, engine, settings, Options(**full, **extra))
    out.send((plain, time.perf_counter() - started, before,
              resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def effects(model: str, photos: Path | None) -> int:
    data = _photo(photos)
    print(f"{cpu_description()}; {model}, a {SIDE[0]}×{SIDE[1]} answer (size=full), one process a row")
    rows = []
    context = multiprocessing.get_context("spawn")
    for label, extra in OPERATIONS.items():
        receive, send = context.Pipe(duplex=False)
        child = context.Process(target=_measure, args=(model, data, extra, send))
        child.start()
        plain, took, before, after = receive.recv()
        child.join()
        rows.append((label, f"{before:.0f}", f"{max(0.0, after - before):.0f}", f"{plain:.2f}", f"{took:.2f}"))
    _table(("operation", "peak of the plain answer MB", "added peak MB", "plain s", "with it s"), rows)
    return 0
