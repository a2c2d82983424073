"""``python -m tools.build RECIPE BASE TARGET``: build a catalog model from another's file.

What :func:`service.model.fetch.fetch_model` runs, in a process of its own, for a model the catalog
lists as a :class:`service.model.catalog.Build`: the build needs ``onnx`` (requirements-tools.txt) and
some 1 GB for a moment, neither of which the server should carry. Exits 0 with TARGET written;
otherwise 1 with the reason as the last line of stderr.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

RECIPES = ("int8", "static-int8", "float32", "openvino-ir", "split", "pixels")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.build", description=__doc__.splitlines()[0])
    parser.add_argument("recipe", choices=RECIPES)
    parser.add_argument("base", type=Path, help="the base model's file")
    parser.add_argument("target", type=Path, help="the file to write")
    parser.add_argument("--output", action="append", dest="outputs", metavar="NAME",
                        help="keep only this output of the graph (repeatable)")
    parser.add_argument("--table", help="the calibration table's name in tools/calibration (static-int8)")
    parser.add_argument("--network", nargs=7, type=float, metavar=("SIZE", "MEAN_R", "MEAN_G", "MEAN_B", "STD_R",
                                                                    "STD_G", "STD_B"),
                        help="the network's input side and its normalisation (pixels)")
    args = parser.parse_args(argv)
    try:
        from . import quantize  # imports onnx
    except ImportError as exc:
        print(f"building needs the build tools ({exc.name} is missing: pip install -r requirements-tools.txt)",
              file=sys.stderr)
        return 1
    try:
        if args.recipe == "int8":
            quantize.build_int8_model(args.base, args.target, args.outputs)
        elif args.recipe == "static-int8":
            quantize.build_static_int8_model(args.base, args.target, args.outputs, quantize.CALIBRATION / args.table)
        elif args.recipe == "float32":
            quantize.build_float32_graph(args.base, args.target, args.outputs)
        elif args.recipe == "openvino-ir":
            quantize.build_openvino_ir(args.base, args.target)
        elif args.recipe == "pixels":
            from .pixels import build_pixels_model

            size, *normal = args.network
            build_pixels_model(args.base, args.target, args.outputs[0], int(size), tuple(normal[:3]),
                               tuple(normal[3:]))
        else:
            quantize.build_split_model(args.base, args.target)
    except (ValueError, OSError) as exc:
        print(f"{exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
