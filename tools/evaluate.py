"""``python -m tools eval DIR``: mask quality on a benchmark laid out like ../shared/eval.

``DIR/manifest.csv`` lists rows (source, id, image, mask, gt_kind, headline);
images and ground-truth masks (8-bit, 255 = foreground) are read from DIR.
Each image goes through the same code path as the HTTP API (decode_upload,
then the engine), and the mask is scored at the ground truth's size.

Metrics, per image, then averaged:
- ``iou``: intersection over union, both binarised at 128;
- ``mae``: mean |prediction − truth| on the 0..1 scale;
- ``max_f``: the F-measure (β² = 0.3, as in salient-object benchmarks) at the
  best of 256 thresholds;
- on alpha-matte rows only, over the *uncertain band* (truth strictly between
  0 and 255, widened by 5 px): ``band_mae`` and ``grad`` (the mean squared
  difference of gradient magnitudes after a σ≈1.4 blur, × 1000).
With ``--refine`` the masks are the refined ones (``refine=true``); with
``--rembg VENV`` they are rembg's, from its session with the same weights, run
by that venv's Python (:mod:`service.versus`), so both tables are comparable row
for row; both together score rembg's own refinement (``alpha_matting=True``).
The images are for evaluation only: this command reads them, never copies them.
"""
from __future__ import annotations

import csv
import itertools
import statistics
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from service.imaging.confidence import mask_confidence

BETA2 = 0.3
BAND_WIDTH = 5


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """IoU of two uint8 masks binarised at 128; 1.0 when both are empty."""
    p, t = pred >= 128, truth >= 128
    union = np.logical_or(p, t).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, t).sum() / union)


def mae(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute difference of two uint8 masks, on the 0..1 scale."""
    return float(np.abs(pred.astype(np.float32) - truth.astype(np.float32)).mean() / 255.0)


def max_f_measure(pred: np.ndarray, truth: np.ndarray) -> float:
    """Best F-measure (β² = 0.3) over thresholds 0..255 of ``pred``, truth binarised at 128."""
    positive = truth >= 128
    total_positive = int(positive.sum())
    if total_positive == 0:
        return 1.0 if pred.max() < 128 else 0.0
    # histogram of prediction values among truth-positive and all pixels: cumulative from the top
    hits = np.bincount(pred[positive].ravel(), minlength=256)[::-1].cumsum()[::-1]
    predicted = np.bincount(pred.ravel(), minlength=256)[::-1].cumsum()[::-1]
    precision = hits / np.maximum(predicted, 1)
    recall = hits / total_positive
    f = (1 + BETA2) * precision * recall / np.maximum(BETA2 * precision + recall, 1e-12)
    return float(f.max())


def uncertain_band(truth: np.ndarray) -> np.ndarray:
    """Boolean mask of soft ground-truth pixels (0 < α < 255), widened by BAND_WIDTH pixels."""
    soft = Image.fromarray(((truth > 0) & (truth < 255)).astype(np.uint8) * 255)
    return np.asarray(soft.filter(ImageFilter.MaxFilter(2 * BAND_WIDTH + 1))) > 0


def _gradient_magnitude(alpha: np.ndarray) -> np.ndarray:
    blurred = np.asarray(Image.fromarray(alpha).filter(ImageFilter.GaussianBlur(1.4)), dtype=np.float32) / 255
    # np.gradient needs two samples along an axis; a 1-pixel-thin mask has no slope across it
    gy, gx = (np.gradient(blurred, axis=a) if blurred.shape[a] > 1 else np.zeros_like(blurred) for a in (0, 1))
    return np.hypot(gx, gy)


def band_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """``band_mae`` and ``grad`` over the uncertain band; empty dict when the truth has no soft pixels."""
    band = uncertain_band(truth)
    if not band.any():
        return {}
    diff = np.abs(pred.astype(np.float32) - truth.astype(np.float32))[band] / 255
    grad = (_gradient_magnitude(pred) - _gradient_magnitude(truth))[band] ** 2
    return {"band_mae": float(diff.mean()), "grad": float(grad.mean() * 1000)}


def score(pred: np.ndarray, truth: np.ndarray, alpha_truth: bool) -> dict[str, float]:
    """All metrics for one uint8 prediction against its uint8 ground truth of the same shape."""
    scores = {"iou": iou(pred, truth), "mae": mae(pred, truth), "max_f": max_f_measure(pred, truth)}
    if alpha_truth:
        scores.update(band_metrics(pred, truth))
    return scores


@dataclass
class Row:
    source: str
    id: str
    image: Path
    mask: Path
    alpha: bool
    headline: bool


def read_manifest(root: Path) -> list[Row]:
    with open(root / "manifest.csv", newline="") as f:
        return [Row(r["source"], r["id"], root / r["image"], root / r["mask"],
                    r.get("gt_kind") == "alpha", r.get("headline", "yes") == "yes")
                for r in csv.DictReader(f)]


def _sheet_tile(image: Image.Image, size: int) -> Image.Image:
    tile = image.convert("RGB")
    tile.thumbnail((size, size))
    canvas = Image.new("RGB", (size, size), (40, 40, 40))
    canvas.paste(tile, ((size - tile.width) // 2, (size - tile.height) // 2))
    return canvas


WORSE_BY = 0.05  # a photo this much below the reference's IoU against the truth is named


def _signed(gaps: list[tuple[float, float, str, bool]]) -> str:
    """Our mean IoU less the reference's, signed, as a cell."""
    return f"{statistics.fmean(g[0] - g[1] for g in gaps):+.4f}" if gaps else "–"


def _mean(values: list[float], digits: int = 4) -> str:
    """Mean as a table cell; a dash when there is nothing to average (no alpha rows in a set)."""
    return f"{statistics.fmean(values):.{digits}f}" if values else "–"


def _our_masks(rows: list[Row], model: str, threads: int, refine: bool, full_size: bool = False,
               reference: bool = False) -> Iterator[tuple[Image.Image, Image.Image]]:
    """(photo, alpha) per row, through the pipeline the HTTP API and the CLI walk, on the engine
    and precision the settings choose (a ``reference`` on ONNX Runtime in float32, or in its row's
    own precision); with ``full_size``, at the photo's own size as ``size=full`` answers."""
    from dataclasses import replace

    from service.model.catalog import CATALOG
    from service.config import Settings
    from service.model.engines import fetched_engine
    from service.pipeline import Options, cut_out

    settings = Settings.from_env()
    if reference:
        # in its own precision where it has one alone (the fp16 file): float32 otherwise
        settings = replace(settings, engine="onnxruntime", precision=CATALOG[model].precision or "float32",
                           device="cpu")
    engine = fetched_engine(CATALOG[model], settings, threads, show_progress=False)
    print(f"{model}: {engine.label}, build {engine.build.name}", file=sys.stderr, flush=True)
    options = Options(fmt=None, only_mask=True, refine=refine,
                      output_pixels=settings.max_output_pixels if full_size else None)
    for row in rows:
        result = cut_out(row.image.read_bytes(), engine, settings, options)
        yield result.decoded.rgb, result.mask


def _rembg_masks(rows: list[Row], model: str, threads: int, venv: Path, home: Path | None,
                 alpha_matting: bool) -> Iterator[tuple[Image.Image, Image.Image]]:
    """(photo, mask) per row from rembg's ``remove()`` with the same weights (:func:`rembg_masks`)."""
    from service.config import Settings
    from .versus import prepare_rembg_home, rembg_masks

    settings = Settings.from_env()
    home = prepare_rembg_home(home, settings.model_dir, settings.mirror)
    with tempfile.TemporaryDirectory() as folder:
        paths = rembg_masks(venv, home, model, [row.image for row in rows], Path(folder), threads, alpha_matting)
        for row, path in zip(rows, paths):
            with Image.open(row.image) as photo, Image.open(path) as mask:
                yield photo.convert("RGB"), mask.convert("L")


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (ties broken by order)."""
    ranks = [np.argsort(np.argsort(np.asarray(v))) for v in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def confidence_report(ious: list[float], signals: list[tuple[float, str | None]], headline: list[bool]) -> str:
    """How well X-Mask-Confidence ranks the headline rows by IoU, and which of the worst tenth
    carry an X-Mask-Warning."""
    rows = [(i, c, w) for i, (c, w), h in zip(ious, signals, headline) if h]
    if len(rows) < 3:
        return "confidence: too few headline rows to rank"
    worst = sorted(rows)[:max(1, round(len(rows) / 10))]
    warned = [r for r in rows if r[2]]
    return (f"confidence (X-Mask-Confidence) against IoU on the {len(rows)} headline rows: Spearman "
            f"{spearman([r[0] for r in rows], [r[1] for r in rows]):.3f}; warnings on {len(warned)} rows, "
            f"{sum(1 for r in worst if r[2])} of the worst {len(worst)} by IoU")


def flipped(pred: np.ndarray, reference: np.ndarray) -> float:
    """Share of pixels on the other side of 128 in ``pred`` than in ``reference`` (uint8 masks)."""
    return float(((pred >= 128) != (reference >= 128)).mean())


def evaluate(root: Path, model: str, out: Path, limit: int | None = None, threads: int = 1,
             refine: bool = False, rembg: Path | None = None, rembg_home: Path | None = None,
             reference: str | None = None, full_size: bool = False) -> str:
    """Score ``model`` (or, with ``rembg``, rembg's session with the same weights, run from that
    venv) on the benchmark in ``root``; write a contact sheet to ``out``; return the table.

    With ``reference`` (a catalog model, e.g. isnet-general-fp32) the masks are also held against
    that model's: mean and lowest IoU, the share of pixels that fall on the other side, and the
    photos where over 1% do; the contact sheet then starts with the photos that differ most and
    shows the reference's mask in a fifth column. With ``full_size`` the masks are made at the
    photo's own size, as ``size=full`` answers (rembg's always are).
    """
    rows = read_manifest(root)[:limit]
    if rembg is None:
        variant = f"{model}-refined" if refine else model
        masks = _our_masks(rows, model, threads, refine, full_size)
    else:
        from .versus import REMBG_MODEL

        variant = f"rembg-{REMBG_MODEL[model]}" + ("-alpha-matting" if refine else "")
        masks = _rembg_masks(rows, model, threads, rembg, rembg_home, refine)
    references = _our_masks(rows, reference, threads, False, reference=True) if reference else itertools.repeat(None)
    results: list[tuple[Row, dict[str, float]]] = []
    agreement: list[tuple[float, float, str]] = []  # (flipped share, IoU, photo) against the reference
    truth_gaps: list[tuple[float, float, str, bool]] = []  # (our IoU, the reference's, photo, headline) vs truth
    signals: list[tuple[float, str | None]] = []  # (confidence, warning) per row, from the mask alone
    tiles, tile = [], 160
    for row, (photo, alpha), ref in zip(rows, masks, references):
        with Image.open(row.mask) as gt_image:
            truth = np.asarray(gt_image.convert("L"))
        mask = alpha.resize((truth.shape[1], truth.shape[0]), Image.Resampling.LANCZOS)
        pred = np.asarray(mask)
        results.append((row, score(pred, truth, row.alpha)))
        signals.append(mask_confidence(alpha))
        error = Image.fromarray(np.abs(pred.astype(np.int16) - truth.astype(np.int16)).astype(np.uint8))
        tiles.append([_sheet_tile(photo, tile), _sheet_tile(Image.fromarray(truth), tile),
                      _sheet_tile(mask, tile), _sheet_tile(error, tile)])
        if ref is not None:
            ref_mask = np.asarray(ref[1].resize(mask.size, Image.Resampling.LANCZOS))
            agreement.append((flipped(pred, ref_mask), iou(pred, ref_mask), f"{row.source}/{row.id}"))
            truth_gaps.append((results[-1][1]["iou"], iou(ref_mask, truth), f"{row.source}/{row.id}", row.headline))
            tiles[-1].append(_sheet_tile(Image.fromarray(ref_mask), tile))
    if agreement:  # the photos that differ most first
        order = sorted(range(len(tiles)), key=lambda i: -agreement[i][0])
        tiles = [tiles[i] for i in order]

    out.mkdir(parents=True, exist_ok=True)
    sheet = Image.new("RGB", (len(tiles[0]) * tile if tiles else 4 * tile, max(1, len(tiles)) * tile))
    for y, row_tiles in enumerate(tiles):
        for x, t in enumerate(row_tiles):
            sheet.paste(t, (x * tile, y * tile))
    sheet_path = out / f"contact-sheet-{variant}.png"
    sheet.save(sheet_path)

    lines = [f"model {variant}, {len(results)} images from {root} (columns of {sheet_path.name}: "
             "photo, ground truth, prediction, |error|)",
             "| set | n | IoU | MAE | max F | band MAE (alpha) | grad ×1000 (alpha) |",
             "|---|---|---|---|---|---|---|"]
    groups: dict[str, list[dict[str, float]]] = {}
    for row, s in results:
        groups.setdefault(row.source, []).append(s)
    groups["overall (headline rows)"] = [s for row, s in results if row.headline]
    for name, scores in groups.items():
        band = [s for s in scores if "band_mae" in s]
        lines.append(f"| {name} | {len(scores)} | {_mean([s['iou'] for s in scores])} "
                     f"| {_mean([s['mae'] for s in scores])} | {_mean([s['max_f'] for s in scores])} "
                     f"| {_mean([s['band_mae'] for s in band])} | {_mean([s['grad'] for s in band], 2)} |")
    lines += ["", confidence_report([s["iou"] for _, s in results], signals, [row.headline for row, _ in results])]
    if agreement:
        over = sorted((a for a in agreement if a[0] > 0.01), reverse=True)
        lines += ["", f"against {reference} on all {len(agreement)} images (the contact sheet starts with the "
                      "photos that differ most; its fifth column is the reference's mask):",
                  "| mean IoU | lowest IoU | mean flipped | most flipped | photos over 1% flipped |",
                  "|---|---|---|---|---|",
                  f"| {_mean([a[1] for a in agreement])} | {min(a[1] for a in agreement):.4f} "
                  f"| {statistics.fmean(a[0] for a in agreement):.3%} | {max(a[0] for a in agreement):.2%} "
                  f"| {', '.join(f'{name} ({share:.1%})' for share, _, name in over) or 'none'} |"]
        headline = [g for g in truth_gaps if g[3]]
        below = sorted((g for g in truth_gaps if g[1] - g[0] > WORSE_BY), key=lambda g: g[0] - g[1])
        lines += ["", "against the truth, photo by photo (IoU at 128; the reference's on the same rows):",
                  "| IoU, headline rows | the reference's | difference | photos more than "
                  f"{WORSE_BY} below the reference's |",
                  "|---|---|---|---|",
                  f"| {_mean([g[0] for g in headline])} | {_mean([g[1] for g in headline])} "
                  f"| {_signed(headline)} "
                  f"| {', '.join(f'{name} ({ours:.3f} against {theirs:.3f})' for ours, theirs, name, _ in below) or 'none'} |"]
    return "\n".join(lines)
