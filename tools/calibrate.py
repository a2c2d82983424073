"""``python -m tools calibrate DIR``: activation ranges of IS-Net on a folder of photos, the
table that the static int8 build (``isnet-general-int8``) is made from.

Each photo goes through the service's own preprocessing and the float32 graph; for every
float tensor the run computes, the table keeps the value below which 0.01% of the photo's
values lie and the one above which 0.01% lie, averaged over the photos. Tails, not extremes:
IS-Net's decoder features carry a few huge values (50–300× the 99.9th percentile on some photos)
that would leave an 8-bit range with no resolution for the rest; measured on ../shared/eval,
the mean of per-photo extremes gives a mean mask IoU against float32 of 0.21, these tails 0.94
(docs/performance.md, "Static int8").

Streaming: the tensors are read in batches of ``BATCH`` graph outputs, one photo at a time, so
memory stays near one batch of one photo's activations (about 1 GB at 1024², not the 20+ GB
that keeping every tensor of every photo would take).
"""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np

TAIL = 1e-4        # share of a tensor's values left outside its range, at each end
BATCH = 60         # graph outputs per pass
BINS = 4096        # histogram bins per tensor and photo, for the tails
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def tails(values: np.ndarray, share: float = TAIL) -> tuple[float, float]:
    """(low, high): the values with ``share`` of ``values`` below and above them, to within
    one of BINS histogram bins of the values' own range; (v, v) for a constant tensor."""
    v = values.ravel()
    low, high = float(v.min()), float(v.max())
    if high <= low:
        return low, high
    counts, edges = np.histogram(v, bins=BINS, range=(low, high))
    cumulative = np.cumsum(counts) / v.size
    return (float(edges[np.searchsorted(cumulative, share)]),
            float(edges[min(np.searchsorted(cumulative, 1 - share) + 1, BINS)]))


def calibrate(photos: list[Path], base: Path, output: str | None, threads: int = 2) -> dict:
    """The calibration table of the fp16 IS-Net file ``base`` on ``photos``: a JSON-ready dict
    with the photos' names and sha256, and ``ranges`` {tensor: [low, high]} (float32 values)."""
    import onnx
    import onnxruntime as ort

    from service.model.catalog import CATALOG
    from service.imaging.decode import decode_upload
    from service.imaging.network import preprocess
    from .quantize import float32_graph, inferred_value_info

    spec = CATALOG["isnet-general-int8"]
    model = float32_graph(base, [output] if output else None)
    floats = {v.name for v in inferred_value_info(model) if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    tensors = ["input"] + [o for node in model.graph.node for o in node.output if o in floats]
    tensors += [o.name for o in model.graph.output]
    sums: dict[str, np.ndarray] = {name: np.zeros(2) for name in tensors}
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    batches = [tensors[i:i + BATCH] for i in range(0, len(tensors), BATCH)]
    with tempfile.TemporaryDirectory(prefix="bg-calibrate-") as work:
        for n, batch in enumerate(batches):
            probe = onnx.ModelProto()
            probe.CopyFrom(model)
            del probe.graph.output[:]
            probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in batch)
            path = Path(work) / f"probe{n}.onnx"
            onnx.save(probe, str(path))
            del probe
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for photo in photos:
                rgb = decode_upload(photo.read_bytes(), 1024, 40_000_000).rgb
                for name, value in zip(batch, session.run(batch, {"input": preprocess(rgb, spec)})):
                    sums[name] += tails(value)
            del session
    return {
        "about": "Activation ranges of IS-Net general-use (float32, output 'output' only) for the static "
                 f"int8 build: per photo the {TAIL:.2%} tails at each end of every float tensor, averaged "
                 "over the photos. Made by `python -m tools calibrate`.",
        "tail": TAIL,
        "photos": [{"name": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p in photos],
        "ranges": {name: [float(np.float32(low / len(photos))), float(np.float32(high / len(photos)))]
                   for name, (low, high) in sorted(sums.items())},
    }


def photos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
