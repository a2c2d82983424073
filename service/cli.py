"""Command line: ``python -m service {remove,fetch} ...``.

Only argparse and the catalog are imported up front, so ``--help`` and
``--version`` answer without loading ONNX Runtime.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import __version__
from .catalog import CATALOG


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Background removal that fits in 512 MB: remove backgrounds, fetch models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    remove = commands.add_parser(
        "remove", help="cut the subject out of images",
        usage="%(prog)s IN OUT [options]\n       %(prog)s IN_OR_FOLDER [...] --out-dir DIR [options]",
        description="Write IN with its background removed to OUT: OUT ending in .png gets transparency; "
                    "with --color the subject is put on that colour (OUT may then be .jpg or .webp). "
                    "With --out-dir, every image named and every image in each folder named is "
                    "written to DIR as NAME.png (NAME.jpg with --color, or --format); a file that "
                    "fails is reported at the end and the exit status is 1.")
    remove.add_argument("paths", type=Path, nargs="+", metavar="PATH", help=argparse.SUPPRESS)
    remove.add_argument("-o", "--out-dir", type=Path, metavar="DIR", help="batch: write results into DIR")
    remove.add_argument("--format", choices=("png", "jpg", "webp"), help="batch: output format")
    remove.add_argument("--model", choices=list(CATALOG), help="model (default: $BG_REMOVAL_MODEL or isnet-general-tiny)")
    remove.add_argument("--color", help="background colour: #RRGGBB, #RGB, R,G,B or a CSS name")
    remove.add_argument("--refine", action="store_true", help="fit the mask's soft edges to the photo")
    remove.add_argument("--quiet", action="store_true", help="no progress bar")

    fetch = commands.add_parser("fetch", help="download or build model files, verified by checksum",
                                description="Make models ready in $MODEL_DIR, trying $BG_MODEL_MIRROR first, "
                                            "then each source in the catalog. Exits 1 if any model fails.")
    fetch.add_argument("models", nargs="*", metavar="MODEL", help=f"one of: {', '.join(CATALOG)} "
                                                                   "(default: the configured model)")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")

    bench = commands.add_parser("bench", help="measure memory and speed of the real server under load",
                                description="Start the server for each model, send a mixed load, print a table.")
    bench.add_argument("--models", nargs="+", default=["u2netp", "isnet-general-tiny"], choices=list(CATALOG))
    bench.add_argument("--photos", type=Path, help="folder of photos to send (default: ../shared/samples/images if present)")
    bench.add_argument("--requests", type=int, default=60)
    bench.add_argument("--concurrency", type=int, default=3)
    bench.add_argument("--threads", type=int, default=1, help="BG_REMOVAL_THREADS for the server")
    bench.add_argument("--rembg", type=Path, metavar="VENV",
                       help="also run the images through rembg's remove() from this venv and compare")
    bench.add_argument("--rembg-home", type=Path, metavar="DIR",
                       help="rembg's model folder (default: $U2NET_HOME or ~/.u2net); missing files are made")
    bench.add_argument("--refine", action="store_true",
                       help="also run each model's load with refine=true, on a fresh server")
    bench.add_argument("--stages", action="store_true",
                       help="instead: where a request's time goes, step by step, in one process")
    bench.add_argument("--compare-reuse", action="store_true",
                       help="instead: bare runs with ONNX Runtime buffer reuse on and off")

    evaluate = commands.add_parser("eval", help="score a model on a benchmark folder (manifest.csv, images/, masks/)",
                                   description="Print IoU, MAE, max F and, for alpha mattes, band MAE and gradient "
                                               "error per source and overall; write a contact sheet PNG.")
    evaluate.add_argument("dir", type=Path, metavar="DIR")
    evaluate.add_argument("--model", choices=list(CATALOG), help="model (default: the configured one)")
    evaluate.add_argument("--out", type=Path, default=Path("eval-out"), help="where the contact sheet goes")
    evaluate.add_argument("--limit", type=int, help="only the first N rows")
    evaluate.add_argument("--threads", type=int, default=1)
    evaluate.add_argument("--refine", action="store_true",
                          help="score the refined masks (refine=true); with --rembg, rembg's alpha_matting=True")
    evaluate.add_argument("--rembg", type=Path, metavar="VENV",
                          help="score rembg instead: its session with the same weights, run by VENV's Python")
    evaluate.add_argument("--rembg-home", type=Path, metavar="DIR",
                          help="rembg's U2NET_HOME for --rembg (default: $U2NET_HOME or ~/.u2net)")
    return parser


def _fetch(args, settings) -> int:
    from .fetch import FetchError, fetch_model

    names = args.models or [settings.model]
    unknown = [n for n in names if n not in CATALOG]
    if unknown:
        print(f"error: unknown model {', '.join(unknown)}; choose from {', '.join(CATALOG)}", file=sys.stderr)
        return 2
    status = 0
    for name in names:
        try:
            path = fetch_model(CATALOG[name], settings.model_dir, settings.mirror, show_progress=not args.quiet)
            print(f"{name}: {path}")
        except FetchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
    return status


def _batch_jobs(paths: list[Path], out_dir: Path, extension: str) -> list[tuple[Path, Path]]:
    """(input, output) for each file named and each image file in each folder named, in order.

    Two inputs with the same stem get ``NAME.ext`` and ``NAME-2.ext``.
    """
    from .config import ALLOWED_EXTENSIONS

    inputs: list[Path] = []
    for path in paths:
        if path.is_dir():
            inputs += sorted(p for p in path.iterdir()
                             if p.is_file() and p.suffix.lower().lstrip(".") in ALLOWED_EXTENSIONS)
        else:
            inputs.append(path)
    jobs, taken = [], set()
    for path in inputs:
        name, n = f"{path.stem}.{extension}", 1
        while name in taken:
            n += 1
            name = f"{path.stem}-{n}.{extension}"
        taken.add(name)
        jobs.append((path, out_dir / name))
    return jobs


def _remove(args, settings) -> int:
    from .engine import Engine
    from .errors import ServiceError
    from .fetch import FetchError, Progress
    from .imaging import decode_upload, parse_color
    from .matting import subject_image

    if args.out_dir is None:
        if len(args.paths) != 2:
            print("error: give IN OUT, or images and folders with --out-dir DIR", file=sys.stderr)
            return 2
        jobs = [tuple(args.paths)]
    else:
        jobs = _batch_jobs(args.paths, args.out_dir, args.format or ("jpg" if args.color else "png"))
        if not jobs:
            print("error: no images found in " + ", ".join(map(str, args.paths)), file=sys.stderr)
            return 2
    suffix = jobs[0][1].suffix.lower()
    if suffix not in (".png", ".jpg", ".jpeg", ".webp"):
        print("error: OUT must end in .png, .jpg or .webp", file=sys.stderr)
        return 2
    if suffix != ".png" and not args.color:
        print(f"error: {suffix} has no transparency; give --color or write a .png", file=sys.stderr)
        return 2
    try:
        color = parse_color(args.color) if args.color else None
        spec = CATALOG[args.model or settings.model]
        engine = Engine.fetched(spec, settings, settings.threads)
        if args.out_dir is not None:
            args.out_dir.mkdir(parents=True, exist_ok=True)
    except (ServiceError, FetchError, OSError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1

    batch = args.out_dir is not None
    progress = Progress("remove", len(jobs), enabled=batch and not args.quiet, unit="images")
    failed = []
    for source, target in jobs:
        try:
            if target.resolve() == source.resolve():
                raise OSError("the result would overwrite the input")
            decoded = decode_upload(source.read_bytes(), settings.max_dimension, settings.max_pixels)
            mask = engine.predict_alpha(decoded, args.refine)
            image = subject_image(decoded.rgb, mask, color)
            image.save(target)
            if not batch:
                print(f"{target} ({image.width}×{image.height}, {spec.name})")
        except (ServiceError, OSError) as exc:
            failed.append((source, getattr(exc, "message", None) or str(exc)))
        progress.update(1)
    progress.close()
    if batch:
        print(f"{len(jobs) - len(failed)} of {len(jobs)} written to {args.out_dir} ({spec.name})")
    for source, message in failed:
        print(f"error: {source}: {message}" if batch else f"error: {message}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .config import ConfigError, Settings

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "eval":
        from .evaluate import evaluate

        if not (args.dir / "manifest.csv").is_file():
            print(f"error: {args.dir} has no manifest.csv", file=sys.stderr)
            return 2
        print(evaluate(args.dir, args.model or settings.model, args.out, args.limit, args.threads, args.refine,
                       args.rembg, args.rembg_home))
        return 0
    if args.command == "bench":
        from .bench import ROOT, compare_reuse, main as bench, stages

        if args.compare_reuse:
            return compare_reuse(args.models)

        photos = args.photos or ROOT.parent / "shared" / "samples" / "images"
        photos = photos if photos.is_dir() else None
        if args.stages:
            from .server import apply_malloc_defaults

            apply_malloc_defaults()  # time the steps under the server's malloc settings
            return stages(args.models, photos, args.threads)
        return bench(args.models, photos, args.requests, args.concurrency,
                     args.threads, args.rembg, args.rembg_home, args.refine)
    return _fetch(args, settings) if args.command == "fetch" else _remove(args, settings)
