"""The project's tools, outside the runtime: ``python -m tools {bench,calibrate,eval}``.

They need ``requirements-tools.txt`` beside the runtime's requirements, and run from a clone of
the repository; the server and its image never import them (``python -m service bench`` runs this
in a process of its own).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from service import __version__
from service.model.catalog import CATALOG
from service.model.engines import ENGINES, PRECISIONS


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools", description="The project's tools: benchmarks, "
                                     "evaluation, calibration.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = commands.add_parser("bench", help="measure memory and speed of the real server under load",
                                description="Start the server for each model, send a mixed load, print a table.")
    bench.add_argument("--models", nargs="+", default=["u2netp", "isnet-general-tiny"], choices=list(CATALOG))
    bench.add_argument("--photos", type=Path, help="folder of photos to send (default: ../shared/samples/images "
                                                    "if present, else the sample photos, fetched)")
    bench.add_argument("--requests", type=int, default=60)
    bench.add_argument("--concurrency", type=int, default=3)
    bench.add_argument("--threads", type=int, default=1, help="BG_REMOVAL_THREADS for the server")
    bench.add_argument("--engines", nargs="+", default=["auto"], choices=ENGINES,
                       help="BG_REMOVAL_ENGINE values to run each model on (several: one table across them)")
    bench.add_argument("--precisions", nargs="+", default=["auto"], choices=PRECISIONS,
                       help="BG_REMOVAL_PRECISION values to run each model at; combinations this machine "
                            "cannot run are listed and skipped")
    bench.add_argument("--rembg", type=Path, metavar="VENV",
                       help="also run the images through rembg's remove() from this venv and compare")
    bench.add_argument("--rembg-home", type=Path, metavar="DIR",
                       help="rembg's model folder (default: $U2NET_HOME or ~/.u2net); missing files are made")
    bench.add_argument("--refine", action="store_true",
                       help="also run each model's load with refine=true, on a fresh server")
    bench.add_argument("--size", choices=("default", "full"), default="default",
                       help="the answers' size: full = each photo's own (up to MAX_OUTPUT_PIXELS)")
    bench.add_argument("--memory-limit", type=int, metavar="MB",
                       help="run each server in a memory cgroup of MB (as a container host does); count OOM kills")
    bench.add_argument("--stages", action="store_true",
                       help="instead: where a request's time goes, step by step, in one process")
    bench.add_argument("--matrix", action="store_true",
                       help="instead: every model build × thread count × device on the same photos, "
                            "with agreement against the float32 reference")
    bench.add_argument("--thread-counts", type=int, nargs="+", default=[1, 2], metavar="N",
                       help="with --matrix and --throughput: the thread counts to try")
    bench.add_argument("--jobs-workers", type=int, nargs="+", metavar="N",
                       help="photos a minute through the job queue with N workers against the server alone "
                            "(needs redis-server); the first of --models, --requests photos")
    bench.add_argument("--throughput", action="store_true",
                       help="instead: photos a second at --concurrency clients for each count of --workers × "
                            "--server-concurrency × --thread-counts, with the latency alone and under load")
    bench.add_argument("--workers", type=int, nargs="+", default=[1], metavar="N",
                       help="with --throughput: BG_REMOVAL_WORKERS values")
    bench.add_argument("--server-concurrency", type=int, nargs="+", default=[1], metavar="N",
                       help="with --throughput: BG_REMOVAL_CONCURRENCY values (images each worker runs at once)")
    bench.add_argument("--device", choices=("auto", "cpu", "cuda", "tensorrt"), default="auto",
                       help="with --throughput: BG_REMOVAL_DEVICE for the server")
    bench.add_argument("--library", action="store_true",
                       help="instead: rembg's remove() against this service's (from service import remove), "
                            "each in a process of its own on the same photos (needs --rembg)")
    bench.add_argument("--compare-reuse", action="store_true",
                       help="instead: bare runs with ONNX Runtime buffer reuse on and off")
    bench.add_argument("--effects", action="store_true",
                       help="instead: what each operation drawn after the cut-out (shadow, outline, canvas, "
                            "background blur) adds to a 12 MP answer's peak and time; the first of --models")

    calibrate = commands.add_parser(
        "calibrate", help="measure IS-Net's activation ranges on a folder of photos (for the int8 build)",
        description="Run the float32 IS-Net on every photo in DIR and write the calibration table that "
                    "isnet-general-int8 is built from (tensor ranges only, JSON). The project's own table "
                    "is tools/calibration/isnet-general-use.json.")
    calibrate.add_argument("dir", type=Path, metavar="DIR")
    calibrate.add_argument("--out", type=Path, default=Path("isnet-calibration.json"), help="the table to write")
    calibrate.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    calibrate.add_argument("--threads", type=int, default=2)

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
    evaluate.add_argument("--reference", choices=list(CATALOG), metavar="MODEL",
                          help="also hold the masks against this model's (e.g. isnet-general-fp32)")
    evaluate.add_argument("--rembg-home", type=Path, metavar="DIR",
                          help="rembg's U2NET_HOME for --rembg (default: $U2NET_HOME or ~/.u2net)")
    evaluate.add_argument("--size", choices=("processed", "full"), default="processed",
                          help="masks at the processed size (MAX_DIMENSION) or, as size=full answers, at the "
                               "photo's own; with a small MAX_DIMENSION this scores the scaling up")

    return parser


def write_new(body: bytes, target: Path) -> None:
    """Write ``body`` to ``target`` through a temporary file beside it: a failed write leaves
    neither a partial file nor a damaged earlier one."""
    part = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        part.write_bytes(body)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)


def _calibrate(args, settings) -> int:
    import json

    from service.model.fetch import FetchError, fetch_model

    from .calibrate import calibrate, photos_in

    if args.out.exists() and not args.overwrite:
        print(f"error: {args.out} exists already; pass --overwrite to replace it", file=sys.stderr)
        return 2
    photos = photos_in(args.dir) if args.dir.is_dir() else []
    if not photos:
        print(f"error: no photos (.jpg, .png, .webp) in {args.dir}", file=sys.stderr)
        return 2
    try:
        base = fetch_model(CATALOG["isnet-general-use-fp16"], settings.model_dir, settings.mirror)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    table = calibrate(photos, base, CATALOG["isnet-general-int8"].output, args.threads)
    write_new((json.dumps(table, indent=1) + "\n").encode(), args.out)
    print(f"{args.out}: ranges of {len(table['ranges'])} tensors from {len(photos)} photos")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from service.config import ConfigError, Settings

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
                       args.rembg, args.rembg_home, args.reference, args.size == "full"))
        return 0

    if args.command == "calibrate":
        return _calibrate(args, settings)
    if args.command == "bench":
        from .bench import ROOT, compare_reuse, main as bench, stages

        if args.compare_reuse:
            return compare_reuse(args.models)
        if args.library:
            from .library_bench import compare_library

            if not args.rembg:
                print("error: --library compares against rembg: give --rembg VENV", file=sys.stderr)
                return 2
            photos_dir = args.photos or ROOT.parent / "shared" / "samples" / "images"
            return compare_library(args.models, photos_dir if photos_dir.is_dir() else None, args.threads,
                                   args.rembg, args.rembg_home)
        if args.effects:
            from service.memory import apply_malloc_defaults
            from .effects_bench import effects

            apply_malloc_defaults()
            photos_dir = args.photos or ROOT.parent / "shared" / "samples" / "images"
            return effects(args.models[0], photos_dir if photos_dir.is_dir() else None)
        if args.jobs_workers:
            from service.memory import apply_malloc_defaults
            from .jobs_bench import jobs_throughput

            apply_malloc_defaults()  # the server and workers inherit them, as app_isnet_tiny.py sets them
            photos_dir = args.photos or ROOT.parent / "shared" / "samples" / "images"
            return jobs_throughput(args.models[0], photos_dir if photos_dir.is_dir() else None, args.requests,
                                   args.jobs_workers, args.threads)

        photos = args.photos or ROOT.parent / "shared" / "samples" / "images"
        if not photos.is_dir():  # a clone with nothing beside it: the project's sample photos
            from .photos import fetch_photos

            photos = fetch_photos()[0].parent
        if args.matrix:
            from .bench import matrix

            return matrix(args.models, photos, args.thread_counts, args.engines, args.precisions)
        if args.throughput:
            from .throughput import main as throughput

            return throughput(args.models, photos, args.workers, args.server_concurrency, args.thread_counts,
                              args.concurrency, args.requests, args.device)
        if args.stages:
            from service.memory import apply_malloc_defaults

            apply_malloc_defaults()  # time the steps under the server's malloc settings
            return stages(args.models, photos, args.threads, args.engines, args.precisions)
        try:
            return bench(args.models, photos, args.requests, args.concurrency,
                         args.threads, args.rembg, args.rembg_home, args.refine, args.memory_limit, args.size,
                         args.engines, args.precisions)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 1


if __name__ == "__main__":
    sys.exit(main())
