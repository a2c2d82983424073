"""Command line: ``python -m service {remove,fetch} ...``.

Only argparse and the catalog are imported up front, so ``--help`` and
``--version`` answer without loading ONNX Runtime.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .model.catalog import CATALOG


# The project's tools, run from here as from ``python -m tools`` (:func:`_tool`).
TOOL_COMMANDS = {"bench": "measure memory and speed of the real server under load",
                 "calibrate": "measure IS-Net's activation ranges for the int8 build",
                 "eval": "score a model on a benchmark folder"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bg-removal",
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
                    "fails is reported at the end and the exit status is 1. An existing file is "
                    "never replaced unless --overwrite is given.")
    remove.add_argument("paths", type=Path, nargs="+", metavar="PATH", help=argparse.SUPPRESS)
    remove.add_argument("-o", "--out-dir", type=Path, metavar="DIR", help="batch: write results into DIR")
    remove.add_argument("--format", choices=("png", "jpg", "webp"), help="batch: output format")
    remove.add_argument("--model", choices=list(CATALOG), help="model (default: $BG_REMOVAL_MODEL or isnet-general-tiny)")
    remove.add_argument("--color", help="background colour: #RRGGBB, #RGB, R,G,B or a CSS name")
    remove.add_argument("--refine", action="store_true", help="fit the mask's soft edges to the photo")
    remove.add_argument("--only-mask", action="store_true", help="write the grey mask instead of the cut-out")
    existing = remove.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace outputs that exist already")
    existing.add_argument("--skip-existing", action="store_true",
                          help="batch: leave outputs that exist already as they are (resume a batch)")
    remove.add_argument("--quiet", action="store_true", help="no progress bar")
    remove.add_argument("--server", metavar="URL", help="send the images to a running service at URL instead "
                                                       "(waits as its Retry-After says when it is busy)")
    remove.add_argument("--concurrency", type=int, default=2, metavar="N", help="with --server: N at a time")
    remove.add_argument("--jobs", action="store_true",
                        help="with --server: send the images as asynchronous jobs (POST /api/bg/jobs) of up to "
                             f"{JOB_IMAGES} images each and fetch the results when each ends")
    remove.add_argument("--api-key", metavar="KEY", help="with --server: its API key (default: $API_KEY)")

    commands.add_parser("serve", help="start the production server (gunicorn) on $HOST:$PORT",
                        description="The same as python app_isnet_tiny.py: makes the configured model ready, "
                                    "then serves it with gunicorn; settings come from the environment.")

    commands.add_parser("worker", help="work on the job queue at $REDIS_URL with the configured model",
                        description="An RQ worker: loads the model as the server does and runs the jobs "
                                    "submitted to /api/bg/jobs, one image at a time, until SIGTERM.")

    commands.add_parser("models", help="list the catalog: input, file size, memory at work, licence, sources")

    fetch = commands.add_parser("fetch", help="download or build model files, verified by checksum",
                                description="Make models ready in $MODEL_DIR, trying $BG_MODEL_MIRROR first, "
                                            "then each source in the catalog. Exits 1 if any model fails.")
    fetch.add_argument("models", nargs="*", metavar="MODEL", help=f"one of: {', '.join(CATALOG)} "
                                                                   "(default: the build that serves the configured model here)")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")

    from .rembg_cli import add_parsers

    add_parsers(commands)  # rembg's i, p, b and d
    for name, about in TOOL_COMMANDS.items():  # the parsers are the tools' own (python -m tools NAME --help)
        commands.add_parser(name, help=f"{about} (the project's tools: python -m tools {name})", add_help=False)
    return parser


def _fetch(args, settings) -> int:
    from .model.engines import EngineUnavailable, settings_choice
    from .model.fetch import FetchError, fetch_model

    if args.models:
        names = args.models
    else:  # the build that serves the configured model on this machine (service/model/engines)
        try:
            names = [settings_choice(CATALOG[settings.model], settings).build]
        except EngineUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
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


FORMATS = {".png": "png", ".webp": "webp", ".jpg": "jpeg", ".jpeg": "jpeg"}
JOB_IMAGES, JOB_BYTES = 20, 32 * 2**20  # one job's images, at most, with --jobs


def _job_chunks(jobs: list[tuple[Path, Path]]) -> list[list[tuple[Path, Path]]]:
    """The (input, output) pairs in groups of JOB_IMAGES images and JOB_BYTES bytes at most."""
    chunks, size = [[]], 0
    for job in jobs:
        length = job[0].stat().st_size if job[0].is_file() else 0
        if chunks[-1] and (len(chunks[-1]) >= JOB_IMAGES or size + length > JOB_BYTES):
            chunks.append([])
            size = 0
        chunks[-1].append(job)
        size += length
    return [chunk for chunk in chunks if chunk]


def _run_jobs(remote, jobs: list[tuple[Path, Path]], concurrency: int, progress, failed: list) -> None:
    """Each group of images submitted as one job; each result written as its job ends."""
    from concurrent.futures import ThreadPoolExecutor

    from .errors import ServiceError

    def one(chunk: list[tuple[Path, Path]]) -> None:
        try:
            state = remote.wait(remote.submit([(source.name, source.read_bytes()) for source, _ in chunk]))
        except (ServiceError, OSError) as exc:
            failed.extend((source, getattr(exc, "message", None) or str(exc)) for source, _ in chunk)
            progress.update(len(chunk))
            return
        for (source, target), entry in zip(chunk, state["files"]):
            try:
                if entry.get("status") != 200:
                    raise OSError(entry.get("error") or f"the job {state['state']} before this image")
                _write_new(remote.result(entry["url"]), target)
            except (ServiceError, OSError) as exc:
                failed.append((source, getattr(exc, "message", None) or str(exc)))
            progress.update(1)

    with ThreadPoolExecutor(max(1, concurrency)) as pool:
        list(pool.map(one, _job_chunks(jobs)))


def _write_new(body: bytes, target: Path) -> None:
    """Write ``body`` to ``target`` through a temporary file beside it: a failed write leaves
    neither a partial file nor a damaged earlier one."""
    part = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        part.write_bytes(body)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)


def _remove(args, settings) -> int:
    from .model.engines import fetched_engine
    from .errors import ServiceError
    from .model.fetch import FetchError, Progress
    from .imaging.compose import parse_color
    from .pipeline import Options, cut_out

    if args.only_mask and args.color:
        print("error: --only-mask writes the mask alone; it takes no --color", file=sys.stderr)
        return 2
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
    if suffix not in FORMATS:
        print("error: OUT must end in .png, .jpg or .webp", file=sys.stderr)
        return 2
    if suffix in (".jpg", ".jpeg") and not args.color and not args.only_mask:
        print(f"error: {suffix} has no transparency; give --color or write a .png", file=sys.stderr)
        return 2
    existing = [target for _, target in jobs if target.exists()]
    skipped = 0
    if args.skip_existing:
        jobs = [(source, target) for source, target in jobs if not target.exists()]
        skipped = len(existing)
    elif existing and not args.overwrite:
        names = ", ".join(map(str, existing[:3])) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        hint = ("to process several images, name a folder with --out-dir DIR; " if args.out_dir is None else
                "to resume the batch, pass --skip-existing; ")
        print(f"error: {names} exist{'s' if len(existing) == 1 else ''} already; nothing was written. "
              f"{hint[0].upper()}{hint[1:]}to replace, pass --overwrite", file=sys.stderr)
        return 2
    try:
        color = parse_color(args.color) if args.color else None
        if args.out_dir is not None:
            args.out_dir.mkdir(parents=True, exist_ok=True)
        if args.jobs and not (args.server and args.out_dir is not None):
            raise OSError("--jobs sends a batch to a server: give --server URL and --out-dir DIR")
        if args.jobs and FORMATS[suffix] == "jpeg":
            raise OSError("jobs answer PNG or WebP: give --format png or webp")
        if args.server:
            from .remote import Remote, RemoteJobs

            spec_name = args.server
            work = (RemoteJobs if args.jobs else Remote)(args.server, args.api_key or os.environ.get("API_KEY"),
                                                         FORMATS[suffix], args.only_mask, args.refine, args.color)
            work = work if args.jobs else work.cut_out
        else:
            spec = CATALOG[args.model or settings.model]
            spec_name = spec.name
            engine = fetched_engine(spec, settings)
            options = Options(fmt=FORMATS[suffix], only_mask=args.only_mask, refine=args.refine, background=color)
            work = lambda data: cut_out(data, engine, settings, options).body  # noqa: E731
    except (ServiceError, FetchError, OSError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1

    batch = args.out_dir is not None
    progress = Progress("remove", len(jobs), enabled=batch and not args.quiet, unit="images")
    failed = []

    def one(job: tuple[Path, Path]) -> None:
        source, target = job
        try:
            if target.resolve() == source.resolve():
                raise OSError("the result would overwrite the input")
            _write_new(work(source.read_bytes()), target)
            if not batch:
                print(f"{target} ({spec_name})")
        except (ServiceError, OSError) as exc:
            failed.append((source, getattr(exc, "message", None) or str(exc)))
        progress.update(1)

    if args.jobs:
        for source, target in jobs:
            if target.resolve() == source.resolve():
                print(f"error: {source}: the result would overwrite the input", file=sys.stderr)
                return 1
        _run_jobs(work, jobs, args.concurrency, progress, failed)
    elif args.server and args.concurrency > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(one, jobs))
    else:
        for job in jobs:
            one(job)
    progress.close()
    if batch:
        kept = f"; {skipped} already there, skipped" if skipped else ""
        print(f"{len(jobs) - len(failed)} of {len(jobs)} written to {args.out_dir} ({spec_name}){kept}")
    for source, message in failed:
        print(f"error: {source}: {message}" if batch else f"error: {message}", file=sys.stderr)
    return 1 if failed else 0


def _models() -> int:
    from .model.catalog import DEFAULT_MODEL
    from .model.fetch import describe_source

    print("| model | input | file MB | memory at work MB | licence | sources |")
    print("|---|---|---|---|---|---|")
    for spec in CATALOG.values():
        name = f"{spec.name} (default)" if spec.name == DEFAULT_MODEL else spec.name
        size = f"{spec.size / 1e6:.1f}" if spec.size else "?"
        memory = "?" if not spec.memory_mb else str(spec.memory_mb) if spec.memory_measured else f"≥ {spec.memory_mb}"
        sources = "; ".join(describe_source(s) for s in spec.sources)
        print(f"| {name} | {spec.input_size}² | {size} | {memory} | {spec.licence} | {sources} |")
    return 0


def _tool(argv: list[str]) -> int:
    """``bench``, ``calibrate`` and ``eval`` are the project's tools (``tools/``, outside the
    runtime): run by ``python -m tools`` in a process of their own, from the clone that holds them."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    if not (root / "tools" / "__main__.py").is_file():
        print(f"error: {argv[0]} is one of the project's tools, which this installation does not hold: run "
              f"python -m tools {argv[0]} in a clone of the repository (with requirements-tools.txt)", file=sys.stderr)
        return 2
    path = os.pathsep.join(filter(None, (str(root), os.environ.get("PYTHONPATH"))))
    return subprocess.call([sys.executable, "-m", "tools", *argv], env={**os.environ, "PYTHONPATH": path})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in TOOL_COMMANDS:
        return _tool(argv)
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .config import ConfigError, Settings

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "models":
        return _models()
    if args.command in ("i", "p", "b", "d"):
        from .rembg_cli import run

        return run(args)
    if args.command == "serve":
        from .http.server import serve

        serve("service.http.wsgi:app")
        return 0
    if args.command == "worker":
        from .jobs.worker import main as worker

        return worker()
    return _fetch(args, settings) if args.command == "fetch" else _remove(args, settings)
