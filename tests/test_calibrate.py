"""python -m tools calibrate: the activation ranges the static int8 build is made from."""
from __future__ import annotations

import json

import numpy as np

from tools.calibrate import TAIL, tails
from tools.quantize import CALIBRATION


def test_tails_leave_the_given_share_outside_at_each_end():
    values = np.arange(1_000_000, dtype=np.float32)
    low, high = tails(values)
    step = values.max() / 4096  # one histogram bin
    assert abs(low - TAIL * values.size) <= step and abs(high - (1 - TAIL) * values.size) <= step
    assert tails(np.full(10, 3.0)) == (3.0, 3.0)


def test_the_committed_table_names_its_photos_and_covers_the_graph():
    table = json.loads((CALIBRATION / "isnet-general-use.json").read_text())
    assert len(table["photos"]) == 14 and all(len(p["sha256"]) == 64 for p in table["photos"])
    assert len(table["ranges"]) == 356
    assert all(low <= high for low, high in table["ranges"].values())
    assert table["ranges"]["input"][0] < 0 < table["ranges"]["input"][1]  # mean 0.5 taken off


def test_calibrate_writes_a_table_and_never_overwrites_one(run_cli, photos, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "chelsea.png").write_bytes(photos["chelsea"].read_bytes())
    out = tmp_path / "table.json"
    result = run_cli("calibrate", folder, "--out", out)
    assert result.returncode == 0, result.stderr
    table = json.loads(out.read_text())
    assert [p["name"] for p in table["photos"]] == ["chelsea.png"]
    committed = json.loads((CALIBRATION / "isnet-general-use.json").read_text())
    assert set(table["ranges"]) == set(committed["ranges"])
    before = out.read_text()
    result = run_cli("calibrate", folder, "--out", out)
    assert result.returncode == 2 and "--overwrite" in result.stderr and out.read_text() == before
