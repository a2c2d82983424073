"""Soft edges: the subject's own colours under them, and (opt-in) the mask fitted to the photo.

Where the mask is between 0 and 1 (hair, fur, soft edges), a photo's pixel
mixes the subject's colour F with the background's B: ``I = αF + (1 − α)B``.
Cutting out with the photo's colours keeps that B in the edge, which shows
as a halo of the old background on any new one. :func:`estimate_foreground`
recovers F with the two-pass blur-fusion estimate of Forte and Pitié,
"Approximate Fast Foreground Colour Estimation" (ICIP 2021): local means of
F and B weighted by α and 1 − α, then a correction that makes ``αF + (1 − α)B``
give back the photo. It needs only box filters, so it is linear in the pixel
count and its memory is a few float32 copies of a strip of the edge region.

:func:`refine_mask` (``refine=true``) re-fits the mask's soft band to the photo
with a guided filter before either of the above uses it.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from .geometry import CERTAIN_LEVEL
from .pool import spread
from ..memory import heap_buffers

# The first pass spreads colours far into the band (radius 90 px), the second restores
# detail (6 px). The first is smooth, so it runs at a quarter of the resolution.
_RADII = (90, 6)
_COARSE = 4
_EPS = np.float32(1e-5)
# Mask levels within CERTAIN_LEVEL of 0 or 255 count as certain, here, in refine_mask and in
# the crop. A colour under α ≤ 5 shows at most 2% on any background; u2netp leaves such a haze
# over much of a photo, and leaving it out shrinks the box the fine pass runs on by a quarter or more.
_CERTAIN = CERTAIN_LEVEL
# Rows per strip of the fine pass and of refine_mask: bounds their float32 copies to a few MB
# at any image size. 64 rather than 128: the foreground's boxes then hug the band closer, 1.7×
# faster on the sample photos' masks (docs/performance.md); refine_mask's time is the same.
_STRIP = 64
# Columns without a soft pixel that the fine pass crosses rather than starting a new box.
_RUN_GAP = 32


def _soft(mask: np.ndarray) -> np.ndarray:
    return (mask > _CERTAIN) & (mask < 255 - _CERTAIN)


def _box_sum_axis(a: np.ndarray, r: int, axis: int) -> np.ndarray:
    """Sum over a window of 2r + 1 along ``axis``, clipped at the borders.

    Differences of a running sum, taken as three slices (window cut at the start,
    whole, cut at the end): slices cost no gather, about half the time of indexing.
    """
    n = a.shape[axis]
    a = np.moveaxis(a, axis, 0)
    c = np.empty((n + 1,) + a.shape[1:], np.float32)
    c[0] = 0
    np.cumsum(a, axis=0, dtype=np.float32, out=c[1:])
    out = np.empty(a.shape, np.float32)
    head = min(r + 1, n)
    out[:head] = c[r + 1:r + 1 + head] if r + head <= n else c[np.minimum(np.arange(head) + r + 1, n)]
    if n > 2 * r + 1:
        np.subtract(c[2 * r + 2:], c[1:n - 2 * r], out=out[r + 1:n - r])
    tail = np.arange(max(n - r, r + 1), n)
    out[tail] = c[n] - c[tail - r]
    return np.moveaxis(out, 0, axis)


def box_mean(a: np.ndarray, r: int) -> np.ndarray:
    """Mean of ``a`` (H, W[, C]) over a (2r + 1)² window, the window clipped at the borders."""
    h, w = a.shape[:2]
    counts = [np.minimum(np.arange(n) + r + 1, n) - np.maximum(np.arange(n) - r, 0) for n in (h, w)]
    area = np.outer(counts[0], counts[1]).astype(np.float32)
    if a.ndim == 3:
        area = area[..., None]
    return _box_sum_axis(_box_sum_axis(a, r, 0), r, 1) / area


def _floats(image: Image.Image) -> np.ndarray:
    a = np.asarray(image, dtype=np.float32) / 255
    return a if a.ndim == 3 else a[..., None]


def _means(image: np.ndarray, alpha: np.ndarray, fg: np.ndarray, bg: np.ndarray, r: int):
    """Local means of F weighted by α and of B weighted by 1 − α."""
    mean_alpha = box_mean(alpha, r)
    mean_fg = box_mean(fg * alpha, r) / (mean_alpha + _EPS)
    mean_bg = box_mean(bg * (1 - alpha), r) / (1 - mean_alpha + _EPS)
    return mean_fg, mean_bg


def _fuse(image: np.ndarray, alpha: np.ndarray, mean_fg: np.ndarray, mean_bg: np.ndarray) -> np.ndarray:
    """F such that αF + (1 − α)·mean_bg gives the photo back, starting from mean_fg."""
    fg = mean_fg + alpha * (image - alpha * mean_fg - (1 - alpha) * mean_bg)
    return np.clip(fg, 0, 1, out=fg)


def _to_rgb(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.rint(a * 255).astype(np.uint8))


def _runs(columns: np.ndarray, margin: int) -> list[tuple[int, int]]:
    """(left, right) column spans covering the True ``columns`` with ``margin`` either side,
    clipped to the row; spans closer than _RUN_GAP columns are one span (each box has its cost)."""
    at = np.flatnonzero(columns)
    if at.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(at) > 2 * margin + _RUN_GAP)
    starts, ends = at[np.r_[0, breaks + 1]], at[np.r_[breaks, at.size - 1]]
    return [(max(int(s) - margin, 0), min(int(e) + margin + 1, columns.size)) for s, e in zip(starts, ends)]


def estimate_foreground(rgb: Image.Image, mask: Image.Image) -> Image.Image:
    """``rgb`` with the colours of its semi-transparent pixels (5 < mask < 250) replaced by F.

    The coarse pass runs on the whole image at a quarter of its size; the fine
    pass only on boxes around the semi-transparent pixels, a strip of rows and a run
    of columns each. Pixels with mask ≤ 5 or ≥ 250 keep their colours exactly.
    """
    a = np.asarray(mask)
    soft = _soft(a)
    rows = np.flatnonzero(soft.any(axis=1))
    if rows.size == 0:
        return rgb
    out = np.array(rgb)
    with heap_buffers():  # the fine pass makes dozens of temporaries per strip
        small = (max(1, rgb.width // _COARSE), max(1, rgb.height // _COARSE))
        small_image = _floats(rgb.resize(small, Image.Resampling.BOX))
        coarse = _means(small_image, _floats(mask.resize(small, Image.Resampling.BOX)), small_image, small_image,
                        max(1, _RADII[0] // _COARSE))

        coarse_images = [_to_rgb(m) for m in coarse]
        scale_x, scale_y = small[0] / rgb.width, small[1] / rgb.height
        margin = _RADII[1]
        # The fine pass goes down the band in strips, and along each strip over the runs of
        # columns that hold soft pixels, each box with the window's reach around it: the same
        # answer as one pass over the whole band's box, over a fraction of its pixels. Boxes
        # write disjoint parts of ``out``, so they run side by side (service/imaging/pool.py).
        boxes = [(left, top, right, min(top + _STRIP, rows[-1] + 1))
                 for top in range(rows[0], rows[-1] + 1, _STRIP)
                 for left, right in _runs(soft[top:min(top + _STRIP, rows[-1] + 1)].any(axis=0), margin)]

        def fine(span: tuple[int, int, int, int]) -> None:
            left, top, right, bottom = span
            box = (left, max(top - margin, 0), right, min(bottom + margin, a.shape[0]))
            image, alpha = _floats(rgb.crop(box)), _floats(mask.crop(box))
            # the coarse means, scaled up for this box only (its corners in the small image's coordinates)
            small_box = (box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y)
            size = (box[2] - box[0], box[3] - box[1])
            mean_fg, mean_bg = (_floats(m.resize(size, Image.Resampling.BILINEAR, box=small_box))
                                for m in coarse_images)
            fg = _fuse(image, alpha, mean_fg, mean_bg)
            fg = _fuse(image, alpha, *_means(image, alpha, fg, mean_bg, margin))[top - box[1]:bottom - box[1]]
            band = soft[top:bottom, left:right]
            out[top:bottom, left:right][band] = np.rint(fg[band] * 255).astype(np.uint8)

        spread(fine, boxes)
    return Image.fromarray(out)


# Edge refinement: a colour guided filter (He, Sun and Tang, "Guided Image Filtering",
# ECCV 2010 / TPAMI 2013) in its fast, subsampled form (He and Sun, "Fast Guided Filter",
# 2015). The window is 3 cells of a grid whose cell is _CELL mask pixels: the blur a
# network leaves on an edge is a few of its own pixels, and the window must span it.
# _REFINE_EPS is the filter's ε (colour variance, 0..1 scale).
_CELL = 3
_REFINE_EPS = np.float32(1e-4)


def _guided_coefficients(guide: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cell (a, b) of the colour guided filter q = a·I + b, radius 1, averaged over windows."""
    mean_i, mean_p = box_mean(guide, 1), box_mean(p, 1)
    cov_ip = box_mean(guide * p[..., None], 1) - mean_i * mean_p[..., None]
    var = np.empty(guide.shape[:2] + (3, 3), np.float32)
    for i in range(3):
        for j in range(i, 3):
            var[..., i, j] = var[..., j, i] = box_mean(guide[..., i] * guide[..., j], 1) - mean_i[..., i] * mean_i[..., j]
    var += _REFINE_EPS * np.eye(3, dtype=np.float32)
    a = np.linalg.solve(var, cov_ip[..., None])[..., 0]
    b = mean_p - (a * mean_i).sum(axis=-1)
    return box_mean(a, 1), box_mean(b, 1)


def _grid_rows(grid: Image.Image, size: tuple[int, int], top: int, bottom: int) -> np.ndarray:
    """Rows ``top:bottom`` of ``grid`` scaled to ``size`` (width, height), bilinear: the values
    of scaling the whole grid and cutting the rows out (to float32 rounding), without the whole."""
    scale = grid.height / size[1]
    box = (0, top * scale, grid.width, bottom * scale)
    return np.asarray(grid.resize((size[0], bottom - top), Image.Resampling.BILINEAR, box=box))


def refine_mask(rgb: Image.Image, mask: Image.Image, resolution: int) -> Image.Image:
    """``mask`` with its uncertain band re-fitted to the photo's colours, at full resolution.

    Within each window the guided filter fits the mask as a linear function of
    the colours (q = a·I + b), so an edge in the mask snaps to the edge in the
    photo and the mask takes up detail the network drew too coarsely (strands,
    fur). ``resolution`` is the side of the network's output (the model's input
    size), from which the mask was scaled to the photo. Only pixels within about
    a cell of a soft mask value (not 0..5 or 250..255) change. The coefficients
    are found on a grid of cells; the full-resolution pass goes down the photo in
    strips of _STRIP rows, so its memory is a few MB at any size (a 12 MP photo included).
    """
    m = np.asarray(mask)
    soft = _soft(m)
    if not soft.any():
        return mask
    with heap_buffers():  # the strips' temporaries, reused from the heap
        w, h = rgb.size
        cell = max(2, round(_CELL * max(w, h) / resolution))
        grid = (max(1, -(-w // cell)), max(1, -(-h // cell)))
        a, b = _guided_coefficients(_floats(rgb.resize(grid, Image.Resampling.BOX)),
                                    _floats(mask.resize(grid, Image.Resampling.BOX))[..., 0])
        soft_cells = Image.fromarray(soft.view(np.uint8)).resize(grid, Image.Resampling.BOX)
        del soft
        near_soft = box_mean(_floats(soft_cells), 1)[..., 0] > 0  # cells at most one from a soft pixel
        columns = np.minimum(((np.arange(w) + 0.5) * (grid[0] / w)).astype(np.intp), grid[0] - 1)  # nearest cell
        terms = [Image.fromarray(np.ascontiguousarray(b * 255, dtype=np.float32))] + [
            Image.fromarray(np.ascontiguousarray(a[..., channel], dtype=np.float32)) for channel in range(3)]
        refined = np.array(m)
        for top in range(0, h, _STRIP):
            bottom = min(top + _STRIP, h)
            colours = np.asarray(rgb.crop((0, top, w, bottom)), dtype=np.float32)
            q = _grid_rows(terms[0], (w, h), top, bottom)
            for channel in range(3):
                q = q + _grid_rows(terms[channel + 1], (w, h), top, bottom) * colours[..., channel]
            rows = np.minimum(((np.arange(top, bottom) + 0.5) * (grid[1] / h)).astype(np.intp), grid[1] - 1)
            band = near_soft[rows][:, columns]
            refined[top:bottom][band] = np.clip(q[band] + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(refined)
