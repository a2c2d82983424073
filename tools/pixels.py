"""The ``pixels`` build: a network wrapped so that it takes a photo's 8-bit pixels and answers its mask.

For a GPU. The server's steps around the network (:mod:`service.imaging.network`: scaling the photo
to the network's square and normalising it; scaling the prediction back and making it 8-bit) cost
a GPU host's CPU 60 of the 70 ms it spends on a photo outside the network (docs/scaling.md). Here
they become nodes of the graph, so they run where the network runs:

    image  uint8 (1, H, W, 3)
      → float, planar → to S×S with Pillow's LANCZOS → ÷ its own maximum, − mean, ÷ std
      → the network → its mask output (1, 1, S, S)
      → min–max to 0..255, truncated (rembg's rounding) → to H×W with Pillow's LANCZOS
      → mask  uint8 (H, W)

ONNX's Resize has no Lanczos, and with its linear or cubic filter the masks moved (mean IoU 0.982
against the server's path on the sample photos, one photo 0.85), so :meth:`_Nodes.resize` computes
Pillow's weights from the sizes and applies them as two matrix products, rounding to bytes after
each pass as Pillow's 8-bit resize does (docs/models.md; tests/test_pixels.py holds the steps
within a level of the server's). The graph is stamped opset 18. The photo crosses to the device
as 8-bit pixels (a 0.5 MP photo: 1.5 MB) rather than a 12 MB float tensor.
Deterministic, like every build (the same base gives the same bytes).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .quantize import _prune, _save

OPSET = 18


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _sorted(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """``nodes`` in an order where each comes after what it reads (the fp16 file's casts of its
    input and outputs stand at its end), otherwise as they were."""
    done, pending = [], list(nodes)
    while pending:
        ready = [n for n in pending if all(not i or i in available for i in n.input)]
        if not ready:
            raise ValueError(f"the graph has a cycle or reads what nothing writes (at {pending[0].name!r})")
        for node in ready:
            available.update(node.output)
        done.extend(ready)
        taken = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in taken]
    return done


class _Nodes:
    """Nodes and constants of the wrapper, each name prefixed so that it cannot meet the network's."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, value, dtype=np.float32) -> str:
        self._count += 1
        name = f"{self.prefix}_const_{self._count}"
        self.constants.append(_const(name, np.array(value, dtype)))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attributes) -> str:
        self._count += 1
        out = out or f"{self.prefix}_{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attributes))
        return out

    def round_to_bytes(self, x: str) -> str:
        """Pillow's 8-bit step between and after its passes: rounded, clipped to 0..255 (still float)."""
        rounded = self.op("Floor", self.op("Add", x, self.const(0.5)))
        return self.op("Clip", rounded, self.const(0.0), self.const(255.0))

    def lanczos(self, n_in: str, n_out: str) -> str:
        """Pillow's LANCZOS weights from ``n_in`` samples to ``n_out`` (float scalars, either may be
        a size only known at run time) as an (n_out, n_in) matrix: output i takes input j with
        weight L((j + 0.5 − c) / f), c = (i + 0.5)·n_in/n_out, f = max(n_in/n_out, 1) (antialiased
        when shrinking), L(x) = sinc(x)·sinc(x/3) for |x| < 3, each row summing to 1."""
        scale = self.op("Div", n_in, n_out)
        widen = self.op("Max", scale, self.const(1.0))
        half = self.const(0.5)
        i = self.op("Unsqueeze", self.op("Range", self.const(0.0), n_out, self.const(1.0)),
                    self.const([1], np.int64))                                     # (n_out, 1)
        j = self.op("Range", self.const(0.0), n_in, self.const(1.0))               # (n_in,)
        centre = self.op("Mul", self.op("Add", i, half), scale)
        x = self.op("Div", self.op("Sub", self.op("Add", j, half), centre), widen)  # (n_out, n_in)
        pi_x = self.op("Mul", x, self.const(np.pi))
        zero = self.op("Equal", x, self.const(0.0))
        safe = self.op("Where", zero, self.const(1.0), pi_x)                       # no 0/0
        third = self.op("Div", safe, self.const(3.0))
        sinc = self.op("Div", self.op("Sin", safe), safe)
        sinc3 = self.op("Div", self.op("Sin", third), third)
        kernel = self.op("Where", zero, self.const(1.0), self.op("Mul", sinc, sinc3))
        inside = self.op("Less", self.op("Abs", x), self.const(3.0))
        weights = self.op("Where", inside, kernel, self.const(0.0))
        total = self.op("ReduceSum", weights, self.const([1], np.int64), keepdims=1)
        return self.op("Div", weights, total)

    def resize(self, planes: str, height_in: str, width_in: str, height_out: str, width_out: str) -> str:
        """``planes`` (C, height_in, width_in), float 0..255 → (C, height_out, width_out), as Pillow's
        8-bit LANCZOS resize computes it: the rows first, rounded to bytes, then the columns."""
        across = self.op("Transpose", self.lanczos(width_in, width_out), perm=[1, 0])   # (width_in, width_out)
        rows = self.round_to_bytes(self.op("MatMul", planes, across))                  # (C, height_in, width_out)
        down = self.lanczos(height_in, height_out)                                     # (height_out, height_in)
        return self.round_to_bytes(self.op("MatMul", down, rows))                      # (C, height_out, width_out)


def pixels_graph(base: onnx.ModelProto, output: str, size: int, mean: tuple[float, ...],
                 std: tuple[float, ...]) -> onnx.ModelProto:
    """``base`` (a network taking (1, 3, size, size) float32, answering ``output`` (1, 1, size, size))
    wrapped as the module's docstring draws it: input ``image``, output ``mask``."""
    graph = base.graph
    nodes = _sorted(list(graph.node), {i.name for i in graph.initializer} | {i.name for i in graph.input})
    del graph.node[:]
    graph.node.extend(nodes)
    _prune(graph, [output])
    network_input = graph.input[0].name
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info("image", TensorProto.UINT8, [1, "height", "width", 3]))

    channel = (1, len(mean), 1, 1)
    b = before = _Nodes("pixels_in")
    hw = b.op("Shape", "image", start=1, end=3)                                          # int64 (2,)
    height, width = (b.op("Cast", b.op("Gather", hw, b.const(k, np.int64), axis=0), to=TensorProto.FLOAT)
                     for k in (0, 1))
    square = b.const(float(size))
    planes = b.op("Transpose", b.op("Squeeze", b.op("Cast", "image", to=TensorProto.FLOAT), b.const([0], np.int64)),
                  perm=[2, 0, 1])                                                        # (3, H, W)
    scaled = b.op("Unsqueeze", b.resize(planes, height, width, square, square), b.const([0], np.int64))
    top = b.op("Max", b.op("ReduceMax", scaled, keepdims=0), b.const(1e-6))             # rembg: ÷ its own max
    unit = b.op("Div", scaled, top)
    b.op("Sub", b.op("Mul", unit, b.const((1 / np.array(std, np.float32)).reshape(channel))),
         b.const((np.array(mean, np.float32) / np.array(std, np.float32)).reshape(channel)), out=network_input)

    a = after = _Nodes("pixels_out")
    prediction = a.op("Squeeze", output, a.const([0], np.int64))                        # (1, S, S)
    low = a.op("ReduceMin", prediction, keepdims=0)
    spread = a.op("Max", a.op("Sub", a.op("ReduceMax", prediction, keepdims=0), low), a.const(1e-30))
    levels = a.op("Floor", a.op("Mul", a.op("Sub", prediction, low), a.op("Div", a.const(255.0), spread)))
    mask = a.resize(levels, square, square, height, width)
    a.op("Reshape", a.op("Cast", mask, to=TensorProto.UINT8), hw, out="mask")

    graph.initializer.extend(before.constants + after.constants)
    nodes = before.nodes + list(graph.node) + after.nodes
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("mask", TensorProto.UINT8, ["height", "width"]))
    del graph.value_info[:]
    del base.opset_import[:]
    base.opset_import.append(helper.make_opsetid("", OPSET))
    return base


def build_pixels_model(source: Path, target: Path, output: str, size: int, mean: tuple[float, ...],
                       std: tuple[float, ...]) -> None:
    """Write :func:`pixels_graph` of the network in ``source`` to ``target``."""
    model = pixels_graph(onnx.load(str(source)), output, size, mean, std)
    _save(model, target, f"{source.stem} taking 8-bit pixels (1, H, W, 3) and answering its mask (H, W) as uint8: "
                         "scaling and normalising inside the graph.")
