"""Foreground colour estimation on synthetic edges with known answers."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from service.imaging.compose import compose_on_color
from tools.evaluate import band_metrics, iou
from service.imaging.matting import box_mean, estimate_foreground, refine_mask


@pytest.mark.parametrize("shape", [(7, 11), (9, 5, 3)])
def test_box_mean_is_the_mean_over_the_clipped_window(shape):
    a = np.random.default_rng(0).random(shape, dtype=np.float32)
    r = 2
    expected = np.empty_like(a)
    for y in range(shape[0]):
        for x in range(shape[1]):
            window = a[max(y - r, 0):y + r + 1, max(x - r, 0):x + r + 1]
            expected[y, x] = window.reshape(-1, *shape[2:]).mean(axis=0)
    assert np.allclose(box_mean(a, r), expected, atol=1e-5)


def red_over_green(width: int = 256, height: int = 96, ramp: int = 64):
    """A red subject fading into a green background: the photo, its alpha, the true F."""
    alpha = np.clip((np.arange(width) - (width - ramp) / 2) / ramp, 0, 1)[None, :].repeat(height, 0)
    fg, bg = np.array([220, 0, 30], float), np.array([20, 200, 40], float)
    photo = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    return (Image.fromarray(np.rint(photo).astype(np.uint8)),
            Image.fromarray(np.rint(alpha * 255).astype(np.uint8)), fg)


def test_semi_transparent_pixels_get_the_subjects_colour_not_the_mix():
    photo, mask, fg = red_over_green()
    estimated = np.asarray(estimate_foreground(photo, mask), float)
    alpha = np.asarray(mask)
    band = (alpha > 0) & (alpha < 255)
    weight = alpha[band, None] / 255  # a colour error shows in proportion to alpha

    def visible_error(colours):
        return (np.abs(colours[band] - fg) * weight).sum() / weight.sum() / 3

    naive = visible_error(np.asarray(photo, float))
    assert naive > 20 and visible_error(estimated) < 0.25 * naive  # measured: 46 → 10


def test_no_halo_of_the_old_background_on_a_new_colour():
    photo, mask, _ = red_over_green()
    naive = np.asarray(compose_on_color(photo, mask, (0, 0, 255)), int)
    fixed = np.asarray(compose_on_color(estimate_foreground(photo, mask), mask, (0, 0, 255)), int)
    # Green exists only in the old background: on blue, any green is its halo.
    assert naive[..., 1].max() > 40
    assert fixed[..., 1].max() <= 12


def test_opaque_and_clear_pixels_keep_their_colours_and_hard_masks_are_untouched():
    photo, mask, _ = red_over_green()
    alpha = np.asarray(mask)
    out = np.asarray(estimate_foreground(photo, mask))
    hard = (alpha == 0) | (alpha == 255)
    assert np.array_equal(out[hard], np.asarray(photo)[hard])
    binary = Image.fromarray(np.where(alpha > 127, 255, 0).astype(np.uint8))
    assert estimate_foreground(photo, binary) is photo


def strands_over_an_edge(width: int = 400, height: int = 120):
    """A red subject whose edge breaks into strands over green: the photo and its true alpha.

    Past the solid edge at x = 150 lie 1 px strands at α = 0.6 and 2 px opaque ones,
    the way hair thins out; a network drawing at a quarter of the resolution blurs them.
    """
    rng = np.random.default_rng(1)
    alpha = np.zeros((height, width))
    alpha[:, :150] = 1
    for x in rng.integers(150, 230, 30):
        alpha[:, x] = 0.6
    for x in rng.integers(150, 230, 30):
        alpha[:, x:x + 2] = 1
    fg, bg = np.array([220, 0, 30]), np.array([20, 200, 40])
    photo = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    return Image.fromarray(np.rint(photo).astype(np.uint8)), np.rint(alpha * 255).astype(np.uint8)


def test_refinement_gives_back_the_strands_a_coarse_mask_blurred():
    photo, truth = strands_over_an_edge()
    coarse = Image.fromarray(truth).filter(ImageFilter.GaussianBlur(4))  # drawn at 50 px, scaled to 400
    refined = np.asarray(refine_mask(photo, coarse, resolution=50))
    before, after = band_metrics(np.asarray(coarse), truth), band_metrics(refined, truth)
    assert before["band_mae"] > 0.3 and after["band_mae"] < 0.1 * before["band_mae"]  # measured: 0.32 → 0.004
    assert after["grad"] < before["grad"]
    assert iou(refined, truth) >= iou(np.asarray(coarse), truth)


def test_refinement_changes_only_pixels_near_soft_mask_values():
    photo, truth = strands_over_an_edge(height=300)
    coarse = np.asarray(Image.fromarray(truth).filter(ImageFilter.GaussianBlur(4))).copy()
    # Below row 100 the mask is hard, with its edge at x = 120, inside the red: the
    # filter alone would soften that edge (the photo has none there to fit it to).
    coarse[100:] = np.where(np.arange(400) < 120, 255, 0)
    refined = np.asarray(refine_mask(photo, Image.fromarray(coarse), resolution=50))
    # the cell is 3 × 400 / 50 = 24 px; changes reach at most two cells past a soft value
    assert not np.array_equal(refined[:100], coarse[:100])
    assert np.array_equal(refined[100 + 48:], coarse[100 + 48:])


def test_refinement_leaves_a_hard_mask_alone():
    photo, truth = strands_over_an_edge()
    hard = Image.fromarray(np.where(truth > 127, 255, 0).astype(np.uint8))
    assert refine_mask(photo, hard, resolution=50) is hard


def test_the_fine_pass_in_strips_gives_the_one_pass_answer(monkeypatch):
    import service.imaging.matting

    photo, truth = strands_over_an_edge(height=300)
    photo = photo.rotate(90, expand=True)  # the strands now run across the strips
    mask = Image.fromarray(truth).rotate(90, expand=True).filter(ImageFilter.GaussianBlur(3))
    monkeypatch.setattr(service.imaging.matting, "_STRIP", 16)  # the band is some 100 rows high
    in_strips = np.asarray(estimate_foreground(photo, mask))
    monkeypatch.setattr(service.imaging.matting, "_STRIP", 10_000)
    assert np.array_equal(in_strips, np.asarray(estimate_foreground(photo, mask)))


def test_the_fine_pass_on_threads_gives_the_answer_of_one(monkeypatch):
    import service.imaging.matting
    import service.imaging.pool

    photo, truth = strands_over_an_edge(height=300)
    mask = Image.fromarray(truth).filter(ImageFilter.GaussianBlur(3))
    monkeypatch.setattr(service.imaging.matting, "_STRIP", 16)  # several boxes for the threads
    monkeypatch.setattr(service.imaging.pool, "MAX_THREADS", 4)
    on_threads = np.asarray(estimate_foreground(photo, mask))
    monkeypatch.setattr(service.imaging.pool, "MAX_THREADS", 1)
    assert np.array_equal(on_threads, np.asarray(estimate_foreground(photo, mask)))
    assert not np.array_equal(on_threads, np.asarray(photo))  # the band's colours were estimated


def test_the_fine_pass_over_runs_of_columns_gives_the_one_box_answer(monkeypatch):
    import service.imaging.matting

    photo, truth = strands_over_an_edge()
    # the subject mirrored: two soft edges on every row, some 280 columns of opaque subject between
    photo = Image.fromarray(np.hstack([np.asarray(photo)[:, 249::-1], np.asarray(photo)[:, :250]]))
    mask = Image.fromarray(np.hstack([truth[:, 249::-1], truth[:, :250]])).filter(ImageFilter.GaussianBlur(3))
    assert len(service.imaging.matting._runs(service.imaging.matting._soft(np.asarray(mask)).any(axis=0), 6)) == 2
    in_runs = np.asarray(estimate_foreground(photo, mask)).astype(int)
    monkeypatch.setattr(service.imaging.matting, "_RUN_GAP", 10_000)  # one box from the first soft column to the last
    one_box = np.asarray(estimate_foreground(photo, mask)).astype(int)
    assert not np.array_equal(one_box, np.asarray(photo))
    # the running sums start at each box's edge: float32 rounding, a level at most
    assert np.abs(in_runs - one_box).max() <= 1


def test_refinement_in_strips_gives_the_one_pass_answer(monkeypatch):
    import service.imaging.matting

    photo, truth = strands_over_an_edge(height=300)
    photo = photo.rotate(90, expand=True)  # the strands run across the strips
    mask = Image.fromarray(truth).rotate(90, expand=True).filter(ImageFilter.GaussianBlur(4))
    monkeypatch.setattr(service.imaging.matting, "_STRIP", 7)  # rows that are no multiple of the 24 px cell
    in_strips = np.asarray(refine_mask(photo, mask, resolution=50)).astype(int)
    monkeypatch.setattr(service.imaging.matting, "_STRIP", 10_000)
    whole = np.asarray(refine_mask(photo, mask, resolution=50)).astype(int)
    assert not np.array_equal(whole, np.asarray(mask))
    assert np.abs(in_strips - whole).max() <= 1  # the bilinear grid's float32 rounding, no more
