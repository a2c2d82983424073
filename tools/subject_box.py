"""``python -m tools.subject_box [DIR] [--sheet FILE]``: the subject's box as crop and canvases
measure it (:func:`service.imaging.geometry.main_box`), against the box of every pixel above
CERTAIN_LEVEL that they measured before, on a folder of photos (or
the images of a benchmark's manifest.csv).

Per photo, at the processed size, with the configured model: how much wider and taller than the
box of the half-opaque pixels (alpha ≥ 128) each box is, in % of the photo's long side (what
``crop=true`` adds), and how far the centre of that half-opaque box lands from the centre of a
1000×1000 canvas with 10% padding (``output_size=1000x1000``, ``padding=10%``), in % of the
canvas; and the share of the mask's alpha the new box leaves out. ``--sheet`` writes a contact sheet: each cut-out on grey, the old box in red, the new in
green, the half-opaque box in blue.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from service.imaging.geometry import CERTAIN_LEVEL, SOLID_LEVEL, main_box, subject_box

CANVAS, PADDING = 1000, 100
SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def excess(box, solid, long_side: int) -> float:
    """How much wider or taller ``box`` is than ``solid``, whichever is more, in % of ``long_side``."""
    return 100 * max((box[2] - box[0]) - (solid[2] - solid[0]), (box[3] - box[1]) - (solid[3] - solid[1])) / long_side


def centre_offset(box, solid) -> float:
    """Where ``solid``'s centre lands on the canvas when ``box`` is fitted into it, centred: its
    distance from the canvas' centre, in % of the canvas."""
    width, height = box[2] - box[0], box[3] - box[1]
    room = CANVAS - 2 * PADDING
    factor = min(room / width, room / height)
    at = [PADDING + (room - side * factor) / 2 for side in (width, height)]
    centre = [at[0] + ((solid[0] + solid[2]) / 2 - box[0]) * factor, at[1] + ((solid[1] + solid[3]) / 2 - box[1]) * factor]
    return 100 * max(abs(c - CANVAS / 2) for c in centre) / CANVAS


def left_out(mask: Image.Image, box) -> float:
    """The share of the mask's alpha outside ``box``, in %: what a crop to it leaves out."""
    total = sum(level * count for level, count in enumerate(mask.histogram()))
    kept = sum(level * count for level, count in enumerate(mask.crop(box).histogram()))
    return 100 * (total - kept) / max(total, 1)


def masks(folder: Path):
    from service.config import Settings
    from service.model.catalog import CATALOG
    from service.model.engines import fetched_engine
    from service.pipeline import Options, cut_out

    settings = Settings.from_env()
    engine = fetched_engine(CATALOG[settings.model], settings, show_progress=False)
    if (folder / "manifest.csv").is_file():  # a benchmark laid out like ../shared/eval
        from .evaluate import read_manifest

        paths = [row.image for row in read_manifest(folder)]
    else:
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
    for path in paths:
        result = cut_out(path.read_bytes(), engine, settings, Options(fmt=None))
        yield path.name, result.image, result.mask  # the cut-out and its mask


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.subject_box", description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, nargs="?", default=Path(__file__).resolve().parents[2] / "shared" / "samples" / "images")
    parser.add_argument("--sheet", type=Path, help="write a contact sheet here (JPEG)")
    parser.add_argument("--summary", action="store_true", help="the median and worst rows alone")
    args = parser.parse_args(argv)
    rows, tiles = [], []
    print("| photo | old box: wider/taller % | new box: wider/taller % | old: centre off % | new: centre off % "
          "| new: alpha left out % |")
    print("|---|---|---|---|---|---|")
    for name, cut, mask in masks(args.dir):
        solid = subject_box(mask, SOLID_LEVEL)
        if solid is None:
            print(f"| {name} | no pixel half opaque | | | |")
            continue
        old, new = subject_box(mask, CERTAIN_LEVEL + 1), main_box(mask)
        long_side = max(mask.size)
        row = (excess(old, solid, long_side), excess(new, solid, long_side), centre_offset(old, solid),
               centre_offset(new, solid), left_out(mask, new))
        rows.append(row)
        if not args.summary:
            print(f"| {name} | {row[0]:.1f} | {row[1]:.1f} | {row[2]:.1f} | {row[3]:.1f} | {row[4]:.2f} |")
        if args.sheet:
            tile = Image.new("RGB", cut.size, (128, 128, 128))
            tile.paste(cut, (0, 0), cut)
            draw = ImageDraw.Draw(tile)
            width = max(2, long_side // 250)
            for box, colour in ((old, (230, 30, 30)), (new, (30, 200, 30)), (solid, (40, 90, 230))):
                draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), outline=colour, width=width)
            tile.thumbnail((320, 320))
            tiles.append(tile)
    if rows:
        for label, pick in (("median", statistics.median), ("worst", max)):
            print(f"| {label} | " + " | ".join(f"{pick(r[i] for r in rows):.{2 if i == 4 else 1}f}" for i in range(5))
                  + " |")
    if args.sheet and tiles:
        columns = 5
        sheet = Image.new("RGB", (columns * 320, -(-len(tiles) // columns) * 320), (255, 255, 255))
        for index, tile in enumerate(tiles):
            sheet.paste(tile, ((index % columns) * 320 + (320 - tile.width) // 2,
                               (index // columns) * 320 + (320 - tile.height) // 2))
        sheet.save(args.sheet, "JPEG", quality=80)
        print(f"{args.sheet}: {len(tiles)} photos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
