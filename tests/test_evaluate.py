"""Quality metrics on tiny synthetic masks with known answers, and the eval command end to end."""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest
from PIL import Image

from service.imaging.decode import decode_upload
from service.http.state import app_state
from tools.evaluate import band_metrics, iou, mae, max_f_measure, score, uncertain_band



def masks(*rows: str) -> np.ndarray:
    """'#' = 255, '.' = 0, digits d = d × 25."""
    table = {"#": 255, ".": 0, **{str(d): d * 25 for d in range(10)}}
    return np.array([[table[c] for c in row] for row in rows], dtype=np.uint8)


def test_identical_masks_score_perfectly():
    truth = masks("##..", "##..")
    assert iou(truth, truth) == 1.0 and mae(truth, truth) == 0.0 and max_f_measure(truth, truth) == 1.0


def test_disjoint_masks_score_zero():
    assert iou(masks("##..", "##.."), masks("..##", "..##")) == 0.0
    assert mae(masks("####"), masks("....")) == 1.0


def test_half_overlap():
    # prediction 4 pixels, truth 4 pixels, 2 shared: IoU 2/6, MAE 4/8
    pred, truth = masks("##..", "##.."), masks(".##.", ".##.")
    assert iou(pred, truth) == pytest.approx(2 / 6)
    assert mae(pred, truth) == pytest.approx(0.5)


def test_max_f_picks_the_best_threshold():
    # a soft prediction whose values above 100 match the truth exactly: max F is 1
    truth = masks("##..", "##..")
    pred = masks("55..", "66..")
    assert max_f_measure(pred, truth) == pytest.approx(1.0)
    # precision 1/2 at best, recall 1: F = 1.3·0.5 / (0.3·0.5 + 1) = 0.5652…
    assert max_f_measure(masks("####"), masks("##..")) == pytest.approx(1.3 * 0.5 / (0.3 * 0.5 + 1))


def test_both_empty_is_perfect():
    empty = masks("....")
    assert iou(empty, empty) == 1.0 and max_f_measure(empty, empty) == 1.0


def test_uncertain_band_is_the_soft_region_widened_by_five_pixels():
    truth = np.zeros((1, 40), np.uint8)
    truth[0, 20] = 128
    band = uncertain_band(truth)[0]
    assert band.sum() == 11 and band[15] and band[25] and not band[14] and not band[26]


def test_band_metrics_on_a_synthetic_edge():
    ramp = np.tile(np.clip(np.arange(64) * 8 - 200, 0, 255).astype(np.uint8), (16, 1))  # soft edge
    hard = np.where(ramp >= 128, 255, 0).astype(np.uint8)
    exact = band_metrics(ramp, ramp)
    assert exact == {"band_mae": 0.0, "grad": 0.0}
    off = band_metrics(hard, ramp)
    assert 0.05 < off["band_mae"] < 0.5 and off["grad"] > 0
    assert band_metrics(hard, hard) == {}  # no soft pixels, no band


def test_score_adds_band_metrics_only_for_alpha_truth():
    truth = masks("#5..")
    assert set(score(truth, truth, alpha_truth=False)) == {"iou", "mae", "max_f"}
    assert {"band_mae", "grad"} <= set(score(truth, truth, alpha_truth=True))


@pytest.fixture
def bench_dir(tmp_path, photos, app):
    """Two sample photos laid out like ../shared/eval, u2netp's own masks (made in process) as their truth."""
    root = tmp_path / "bench"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for name in ("astronaut", "chelsea"):
        data = photos[name].read_bytes()
        (root / "images" / f"{name}.png").write_bytes(data)
        app_state(app).model.engine.predict_mask(decode_upload(data, 1024, 40_000_000).rgb).save(
            root / "masks" / f"{name}.png")
        rows.append({"source": "samples", "id": name, "image": f"images/{name}.png",
                     "mask": f"masks/{name}.png", "gt_kind": "mask", "headline": "yes"})
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def samples_row(stdout: str) -> list[str]:
    line = next(l for l in stdout.splitlines() if l.startswith("| samples |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_eval_command_prints_a_table_and_writes_a_contact_sheet(run_cli, bench_dir, tmp_path):
    result = run_cli("eval", bench_dir, "--model", "u2netp", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    cells = samples_row(result.stdout)
    assert cells[1] == "2" and float(cells[2]) > 0.98  # u2netp's own masks as truth
    with Image.open(tmp_path / "out" / "contact-sheet-u2netp.png") as sheet:
        assert sheet.size == (4 * 160, 2 * 160)


def test_eval_holds_the_masks_against_a_reference_and_names_the_photos_it_loses_on(run_cli, bench_dir, tmp_path):
    # the reference runs on ONNX Runtime in float32: so does the model here, to give the same masks
    result = run_cli("eval", bench_dir, "--model", "u2netp", "--reference", "u2netp", "--out", tmp_path / "out",
                     env={"BG_REMOVAL_ENGINE": "onnxruntime"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    agreement = lines[lines.index(next(l for l in lines if l.startswith("| mean IoU |"))) + 2]
    assert agreement.startswith("| 1.0000 | 1.0000 |")
    gap = lines[lines.index(next(l for l in lines if l.startswith("| IoU, headline rows |"))) + 2]
    cells = [c.strip() for c in gap.strip("|").split("|")]
    assert cells[0] == cells[1] and cells[2] == "+0.0000" and cells[3] == "none"


def test_eval_command_scores_refined_masks_on_request(run_cli, bench_dir, tmp_path):
    plain = samples_row(run_cli("eval", bench_dir, "--model", "u2netp", "--out", tmp_path / "out").stdout)
    result = run_cli("eval", bench_dir, "--model", "u2netp", "--refine", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("model u2netp-refined,")
    refined = samples_row(result.stdout)
    assert refined[3] != plain[3]  # MAE: the masks differ from the unrefined ones
    assert (tmp_path / "out" / "contact-sheet-u2netp-refined.png").is_file()


@pytest.mark.skipif(not os.environ.get("REMBG_VENV"), reason="set REMBG_VENV to a venv with rembg 2.0.86")
def test_eval_scores_rembg_from_its_own_venv(run_cli, bench_dir, tmp_path):
    result = run_cli("eval", bench_dir, "--model", "u2netp", "--rembg", os.environ["REMBG_VENV"],
                     "--rembg-home", tmp_path / "u2net", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("model rembg-u2netp,")
    assert float(samples_row(result.stdout)[2]) > 0.98  # rembg's u2netp against ours: the same weights

    result = run_cli("eval", bench_dir, "--model", "u2netp", "--rembg", os.environ["REMBG_VENV"], "--refine",
                     "--rembg-home", tmp_path / "u2net", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("model rembg-u2netp-alpha-matting,")
    assert float(samples_row(result.stdout)[3]) > 0  # MAE: alpha matting moved the masks
    assert (tmp_path / "out" / "contact-sheet-rembg-u2netp-alpha-matting.png").is_file()


def test_eval_command_needs_a_manifest(run_cli, tmp_path):
    result = run_cli("eval", tmp_path)
    assert result.returncode == 2 and "manifest.csv" in result.stderr
