"""rembg's command line as ``bg-removal`` subcommands: ``i`` (a file), ``p`` (a folder, ``--watch``
for new files), ``b`` (raw RGB24 frames on stdin, as ffmpeg pipes them) and ``d`` (download
models), with rembg's options where they mean the same thing (docs/rembg.md).

They run :func:`service.library.remove` on a session loaded once. Unlike rembg, an output that
exists already is kept unless ``--overwrite`` is given.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".avif")
POLL_S = 0.5  # how often --watch looks at the folder


def add_parsers(commands) -> None:
    """rembg's ``i``, ``p``, ``b`` and ``d`` on ``commands`` (argparse's subparsers)."""
    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-m", "--model", help="rembg's name or this catalog's (default: $BG_REMOVAL_MODEL)")
        parser.add_argument("-a", "--alpha-matting", action="store_true",
                            help="fit the soft edges to the photo (this project's refinement)")
        for flag, name in (("-af", "--alpha-matting-foreground-threshold"),
                           ("-ab", "--alpha-matting-background-threshold"), ("-ae", "--alpha-matting-erode-size")):
            parser.add_argument(flag, name, type=int, help="rembg's; accepted, unused")
        parser.add_argument("-om", "--only-mask", action="store_true", help="write the mask alone")
        parser.add_argument("-ppm", "--post-process-mask", action="store_true",
                            help="smooth the mask (opened, blurred, cut at 127)")
        parser.add_argument("-bgc", "--bgcolor", type=int, nargs=4, metavar=("R", "G", "B", "A"),
                            help="a background colour under the cut-out")
        parser.add_argument("-x", "--extras", help="rembg's session options (JSON); accepted, unused")

    one = commands.add_parser("i", help="rembg i: cut out one file (- for stdin or stdout)",
                              description="Write INPUT's cut-out to OUTPUT as PNG, as rembg i does.")
    one.add_argument("input", metavar="INPUT")
    one.add_argument("output", metavar="OUTPUT")
    one.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    common(one)

    folder = commands.add_parser("p", help="rembg p: cut out every image of a folder (-w: and those dropped in)",
                                 description="Write each image of INPUT as OUTPUT/NAME.out.png, as rembg p does; "
                                             "with --watch, go on with the images that arrive until stopped.")
    folder.add_argument("input", type=Path, metavar="INPUT")
    folder.add_argument("output", type=Path, metavar="OUTPUT")
    folder.add_argument("-w", "--watch", action="store_true", help="keep watching INPUT for new images")
    folder.add_argument("-d", "--delete-input", action="store_true", help="delete each image once it is cut out")
    folder.add_argument("--overwrite", action="store_true", help="replace outputs that exist already")
    common(folder)

    frames = commands.add_parser("b", help="rembg b: cut out raw RGB24 frames from stdin (ffmpeg -f rawvideo)",
                                 description="Read WIDTH×HEIGHT RGB24 frames from stdin until it ends; write each "
                                             "cut-out as a PNG to -o's name (printf-style: out-%%03d.png), or all "
                                             "of them one after another to stdout.")
    frames.add_argument("width", type=int, metavar="WIDTH")
    frames.add_argument("height", type=int, metavar="HEIGHT")
    frames.add_argument("-o", "--output-specifier", help="printf-style name for each frame's PNG")
    common(frames)

    download = commands.add_parser("d", help="rembg d: download models (rembg's names or this catalog's)",
                                   description="Fetch and verify each MODEL's files for this machine.")
    download.add_argument("models", nargs="*", metavar="MODEL")


def _session(args):
    from .library import new_session

    if args.extras:
        try:
            json.loads(args.extras)
        except ValueError:
            raise SystemExit(f"error: --extras is JSON, got {args.extras[:40]!r}") from None
    try:
        return new_session(args.model)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


def _cut(args, session, image) -> bytes:
    """The PNG of ``image``'s cut-out (bytes or an array) with the command's options."""
    from .library import remove

    return remove(image, session=session, alpha_matting=args.alpha_matting, only_mask=args.only_mask,
                  post_process_mask=args.post_process_mask, bgcolor=tuple(args.bgcolor) if args.bgcolor else None,
                  force_return_bytes=True)


def _write_new(path: Path, data: bytes, overwrite: bool) -> bool:
    """Write ``data`` to ``path`` through a temporary file beside it; False (nothing written)
    where ``path`` exists and ``overwrite`` is not set."""
    if path.exists() and not overwrite:
        return False
    part = path.with_name(f".{path.name}.part")
    part.write_bytes(data)
    part.replace(path)
    return True


def run(args) -> int:
    return {"i": _one, "p": _folder, "b": _frames, "d": _download}[args.command](args)


def _one(args) -> int:
    from .errors import ServiceError

    if args.output != "-" and Path(args.output).exists() and not args.overwrite:
        print(f"error: {args.output} exists already; pass --overwrite to replace it", file=sys.stderr)
        return 2
    data = sys.stdin.buffer.read() if args.input == "-" else Path(args.input).read_bytes()
    session = _session(args)
    try:
        body = _cut(args, session, data)
    except ServiceError as exc:
        print(f"error: {args.input}: {exc.message}", file=sys.stderr)
        return 1
    if args.output == "-":
        sys.stdout.buffer.write(body)
    else:
        _write_new(Path(args.output), body, True)
    return 0


def _folder(args) -> int:
    from .errors import ServiceError

    if not args.input.is_dir():
        print(f"error: {args.input} is not a folder", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    session = _session(args)
    done: set[Path] = set()
    sizes: dict[Path, int] = {}
    failed = 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    if args.watch:
        print(f"watching {args.input} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        while not stop:
            for path in sorted(args.input.iterdir()):
                if path in done or not path.is_file() or path.suffix.lower() not in SUFFIXES:
                    continue
                size = path.stat().st_size
                if args.watch and sizes.get(path) != size:  # still being written: look again next time
                    sizes[path] = size
                    continue
                done.add(path)
                target = args.output / f"{path.stem}.out.png"
                if target.exists() and not args.overwrite:
                    print(f"{path.name}: {target} exists already, kept (--overwrite replaces it)", file=sys.stderr)
                    continue
                print(f"{path.name}: cutting out", file=sys.stderr, flush=True)
                try:
                    _write_new(target, _cut(args, session, path.read_bytes()), True)
                except ServiceError as exc:
                    failed += 1
                    print(f"{path.name}: {exc.message}", file=sys.stderr)
                    continue
                print(f"{path.name} -> {target}", file=sys.stderr, flush=True)
                if args.delete_input:
                    path.unlink()
            if not args.watch:
                break
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        pass
    return 1 if failed else 0


def _frames(args) -> int:
    import numpy as np

    if args.width < 1 or args.height < 1:
        print("error: WIDTH and HEIGHT are whole numbers of pixels", file=sys.stderr)
        return 2
    if args.output_specifier:
        Path(args.output_specifier % 0).parent.mkdir(parents=True, exist_ok=True)
    session = _session(args)
    size = args.width * args.height * 3
    index = 0
    while True:
        frame = sys.stdin.buffer.read(size)
        if len(frame) < size:  # the stream ended (a partial frame is no frame)
            break
        body = _cut(args, session, np.frombuffer(frame, np.uint8).reshape(args.height, args.width, 3))
        if args.output_specifier:
            Path(args.output_specifier % index).write_bytes(body)
        else:
            sys.stdout.buffer.write(body)
            sys.stdout.buffer.flush()
        index += 1
    print(f"{index} frame{'' if index == 1 else 's'}", file=sys.stderr)
    return 0


def _download(args) -> int:
    from .model.catalog import CATALOG
    from .config import Settings
    from .model.engines import settings_choice
    from .model.fetch import FetchError, fetch_model
    from .library import REMBG_NAMES, servable_models

    settings = Settings.from_env()
    names = [REMBG_NAMES.get(name, name) for name in args.models] or [settings.model]
    unknown = [name for name in names if name not in servable_models()]
    if unknown:
        print(f"error: no model {', '.join(unknown)} here; choose from {', '.join(sorted(servable_models()))}",
              file=sys.stderr)
        return 2
    status = 0
    for name in names:
        build = settings_choice(CATALOG[name], settings).build  # what this machine runs for it
        try:
            print(f"{name}: {fetch_model(CATALOG[build], settings.model_dir, settings.mirror)}")
        except FetchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
    return status
