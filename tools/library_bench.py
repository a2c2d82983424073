"""``python -m tools bench --library --rembg VENV``: rembg's ``remove()`` against this service's
(``from service import new_session, remove``), the same program with its import line changed, each
in a process of its own on the same photos with the same weights and threads: the median time a
photo and the process's peak RSS, side by side (issue 32's second goal: ≤ 0.5× and ≤ 0.3×)."""
from __future__ import annotations

from pathlib import Path

from .bench import _table, cpu_description, load_payloads
from .versus import REMBG_MODEL, library_timing, prepare_rembg_home, rembg_timing


def compare_library(models: list[str], photos: Path | None, threads: int, venv: Path, home: Path | None) -> int:
    from service.config import Settings

    settings = Settings.from_env()
    payloads = [(name, data) for name, data in load_payloads(photos) if name.lower().endswith((".jpg", ".jpeg"))]
    home = prepare_rembg_home(home, settings.model_dir, settings.mirror)
    print(f"CPU: {cpu_description()}; {threads} thread(s); {len(payloads)} photos, remove(bytes) in one process each")
    rows = []
    for model in models:
        ours, ours_peak = library_timing(model, payloads, threads)
        theirs, theirs_peak = rembg_timing(venv, home, model, payloads, threads)
        rows.append((REMBG_MODEL[model], f"{ours:.2f}", f"{theirs:.2f}", f"{ours / theirs:.2f}", f"{ours_peak:.0f}",
                     f"{theirs_peak:.0f}", f"{ours_peak / theirs_peak:.2f}"))
    _table(("new_session(…)", "ours median s", "rembg median s", "time ratio", "ours peak RSS MB",
            "rembg peak RSS MB", "peak ratio"), rows)
    return 0
