"""Build ``isnet-general-tiny`` (IS-Net with int8 Conv weights and float activations) and
``u2netp`` (rembg's u2netp with its Concats split, :func:`build_split_model`).

The input is the fp16 IS-Net graph (fp16 weights, Cast nodes around the
float32 graph input/outputs and around each Resize). The build:

1. drops the float Cast nodes, so the whole graph computes in float32;
2. keeps only the graph outputs the catalog names (IS-Net's side outputs
   and feature maps are dead weight for background removal) and prunes
   what no longer feeds them;
3. stores each Conv weight as int8, symmetric, one scale per output
   channel, feeding the Conv through a ``DequantizeLinear`` node, except
   for the Convs whose output is at least 256 × 256: those do the most work
   per weight, and a float32 constant lets ONNX Runtime prepack it and use
   its blocked (NCHWc) kernels, which it can't do behind a DequantizeLinear.
   On IS-Net that is 18 of 114 Convs and 0.62 M of 44 M weights: a bare 1024²
   run 3.1–3.4 → 2.5–3.0 s at 2 threads, for 5 MB more peak (README, "Memory and speed");
4. turns the remaining float16 initializers (biases, those weights) into float32;
5. rewrites each ``Conv(Concat(a, b, …))`` as ``Conv_a(a) + Conv_b(b) + …``, the
   int8 weight split along its input channels: the same sums, but the
   concatenated copy (128 MiB at IS-Net's 512² decoder stage) never exists.
   A bare 1024² run peaks at 314 MB instead of 406 MB (README, "Memory").

Weights are widened to float32 one tensor at a time, so the build never
holds the whole network in float32 (it stays well under 512 MB).

The result is deterministic: the same input bytes give the same output
bytes, so its sha256 can be pinned in the catalog. This module imports
``onnx`` and is only used by ``python -m service fetch``, never by the server.
"""
from __future__ import annotations

import logging
from collections.abc import Container
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

_FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16)
CALIBRATION = Path(__file__).parent / "calibration"  # committed calibration tables
PRODUCER = "bg-removal-appliance int8-conv-weights"
# Convs whose output has at least this many pixels keep float weights (step 3).
FLOAT_WEIGHT_AREA = 256 * 256


def quantize_per_channel(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantisation of a Conv weight, one scale per output channel.

    ``weight`` is float, shape (out_channels, ...). Returns ``(q, scale)``:
    ``q`` int8 of the same shape in [-127, 127], ``scale`` float32 of shape
    (out_channels,), so that ``q * scale[:, None, ...]`` approximates ``weight``
    to within ``scale / 2`` per element. An all-zero channel gets scale 1.
    """
    w = weight.astype(np.float32, copy=False)
    flat = w.reshape(w.shape[0], -1)
    scale = np.abs(flat).max(axis=1) / np.float32(127.0)
    scale[scale == 0] = 1.0
    scale = scale.astype(np.float32)
    q = np.rint(flat / scale[:, None])
    q = np.clip(q, -127, 127).astype(np.int8).reshape(w.shape)
    return q, scale


def _drop_float_casts(graph: onnx.GraphProto) -> None:
    """Remove Cast nodes between float types, rewiring their consumers."""
    alias: dict[str, str] = {}
    kept = []
    for node in graph.node:
        if node.op_type == "Cast" and node.attribute[0].i in _FLOAT_TYPES:
            alias[node.output[0]] = node.input[0]
        else:
            kept.append(node)

    def resolve(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    # A graph output that was a Cast's result takes over the name of the
    # tensor behind the Cast, so that the output keeps its public name.
    rename = {resolve(out.name): out.name for out in graph.output if out.name in alias}
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(resolve(name), resolve(name))
        for i, name in enumerate(node.output):
            node.output[i] = rename.get(name, name)
    del graph.node[:]
    graph.node.extend(kept)


def _to_float32(graph: onnx.GraphProto) -> None:
    for i, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT16:
            array = numpy_helper.to_array(init).astype(np.float32)
            graph.initializer[i].CopyFrom(numpy_helper.from_array(array, init.name))
    for value in list(graph.input) + list(graph.output):
        if value.type.tensor_type.elem_type == TensorProto.FLOAT16:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    # Intermediate types are re-inferred by ONNX Runtime; stale fp16 entries would lie.
    del graph.value_info[:]


def _prune(graph: onnx.GraphProto, outputs: list[str]) -> None:
    """Keep only ``outputs`` and the nodes and initializers that feed them."""
    keep_outputs = [o for o in graph.output if o.name in outputs]
    missing = set(outputs) - {o.name for o in keep_outputs}
    if missing:
        raise ValueError(f"graph has no output named {sorted(missing)}")
    del graph.output[:]
    graph.output.extend(keep_outputs)

    needed = set(outputs)
    live = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            live.append(node)
            needed.update(i for i in node.input if i)
    live.reverse()
    del graph.node[:]
    graph.node.extend(live)
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def inferred_value_info(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Type and shape of each tensor the graph computes, where ONNX shape inference finds them.

    Inferred on a shell of the graph whose weights are inputs of the same shapes, so that the
    weights' data is not copied: on IS-Net the build's process then peaks at 219 MB at this
    step, against 554 MB (over the ceiling) for inference on the whole model.
    """
    graph = model.graph
    weights = [helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in graph.initializer]
    shell = helper.make_model(helper.make_graph(graph.node, "shapes", [*graph.input, *weights], graph.output),
                              opset_imports=model.opset_import)
    return list(shape_inference.infer_shapes(shell, data_prop=True).graph.value_info)


def output_areas(model: onnx.ModelProto) -> dict[str, int]:
    """Height × width of each 4-D tensor the graph computes, where shape inference finds it."""
    areas = {}
    for info in inferred_value_info(model):
        dims = [d.dim_value for d in info.type.tensor_type.shape.dim]
        if len(dims) == 4 and all(dims):
            areas[info.name] = dims[2] * dims[3]
    return areas


def _quantize_conv_weights(graph: onnx.GraphProto, keep: Container[str] = ()) -> int:
    """Replace each Conv weight initializer by int8 + DequantizeLinear, except for the Convs
    whose output is named in ``keep``. Returns the count."""
    inits = {t.name: t for t in graph.initializer}
    new_nodes = []
    count = 0
    for node in graph.node:
        if node.op_type == "Conv" and node.input[1] in inits and node.output[0] not in keep:
            weight_name = node.input[1]
            weight = numpy_helper.to_array(inits[weight_name]).astype(np.float32)
            q, scale = quantize_per_channel(weight)
            base = weight_name
            q_name, s_name, z_name = f"{base}_int8", f"{base}_scale", f"{base}_zero_point"
            graph.initializer.remove(inits.pop(weight_name))
            graph.initializer.extend([
                numpy_helper.from_array(q, q_name),
                numpy_helper.from_array(scale, s_name),
                numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), z_name),
            ])
            deq_out = f"{base}_dequantized"
            new_nodes.append(helper.make_node(
                "DequantizeLinear", [q_name, s_name, z_name], [deq_out],
                name=f"{base}_dequantize", axis=0,
            ))
            node.input[1] = deq_out
            count += 1
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    return count


_PASS_THROUGH = ("Relu", "Resize", "MaxPool", "Add", "Sigmoid", "Identity")


def _channels(tensor: str, producers: dict, inits: dict) -> int | None:
    """Channel count of an NCHW activation, traced back to a Conv weight; None when unknown."""
    node = producers.get(tensor)
    if node is None:
        return None
    if node.op_type == "Conv":
        weight = producers[node.input[1]].input[0] if node.input[1] in producers else node.input[1]
        return inits[weight].dims[0] if weight in inits else None
    if node.op_type in _PASS_THROUGH:
        return _channels(node.input[0], producers, inits)
    if node.op_type == "Concat":
        parts = [_channels(i, producers, inits) for i in node.input]
        return None if None in parts else sum(parts)
    return None


def _index(graph: onnx.GraphProto) -> tuple[dict, dict, dict]:
    """(producer of each tensor, consumers of each tensor, initializers by name)."""
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return {o: n for n in graph.node for o in n.output}, consumers, {t.name: t for t in graph.initializer}


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    """Remove the initializers no node reads."""
    used = {name for n in graph.node for name in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _split_concat_convs(graph: onnx.GraphProto) -> int:
    """Replace Conv(Concat(x1..xn)) by a sum of n Convs on slices of its weight (int8 behind a
    DequantizeLinear, or float). Returns the count."""
    producers, consumers, inits = _index(graph)
    plans = {}  # Concat output name → (conv, its DequantizeLinear or None, weight name, channels per input)
    for node in graph.node:
        users = consumers.get(node.output[0], [])
        if node.op_type != "Concat" or len(node.input) < 2 or len(users) != 1 or users[0].op_type != "Conv":
            continue
        conv = users[0]
        axis = [a.i for a in node.attribute if a.name == "axis"]
        group = [a.i for a in conv.attribute if a.name == "group"] or [1]
        dequantize = producers.get(conv.input[1])  # None: a float weight, itself an initializer
        if dequantize is not None and dequantize.op_type != "DequantizeLinear":
            continue
        weight_name = dequantize.input[0] if dequantize is not None else conv.input[1]
        if axis not in ([1], [-3]) or group != [1] or weight_name not in inits or conv.input[0] != node.output[0]:
            continue
        channels = [_channels(i, producers, inits) for i in node.input]
        if None in channels or sum(channels) != inits[weight_name].dims[1]:
            continue
        plans[node.output[0]] = (conv, dequantize, weight_name, channels)

    replaced = {id(n) for conv, dq, _, _ in plans.values() for n in (conv, dq) if n is not None}
    nodes = []
    for node in graph.node:
        if id(node) in replaced:
            continue
        if node.op_type != "Concat" or node.output[0] not in plans:
            nodes.append(node)
            continue
        conv, dequantize, weight_name, channels = plans[node.output[0]]
        weight = numpy_helper.to_array(inits[weight_name])
        attributes = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        start, total = 0, None
        for k, (source, count) in enumerate(zip(node.input, channels)):
            part = f"{conv.output[0]}_part{k}"  # tensor names are unique; node names need not be
            sliced = np.ascontiguousarray(weight[:, start:start + count])
            start += count
            if dequantize is None:
                graph.initializer.append(numpy_helper.from_array(sliced, f"{part}_weight"))
            else:
                graph.initializer.append(numpy_helper.from_array(sliced, f"{part}_weight_int8"))
                nodes.append(helper.make_node(
                    "DequantizeLinear", [f"{part}_weight_int8", *dequantize.input[1:]], [f"{part}_weight"],
                    name=f"{part}_weight_dequantize", axis=0))
            bias = [conv.input[2]] if k == 0 and len(conv.input) > 2 else []
            conv_out = f"{part}_output"
            nodes.append(helper.make_node("Conv", [source, f"{part}_weight", *bias], [conv_out],
                                          name=part, **attributes))
            if total is None:
                total = conv_out
            else:
                summed = conv.output[0] if k == len(channels) - 1 else f"{part}_sum"
                nodes.append(helper.make_node("Add", [total, conv_out], [summed], name=f"{part}_add"))
                total = summed
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused_initializers(graph)
    return len(plans)


# The largest float32 buffer a Resize or a float Conv between DequantizeLinear and
# QuantizeLinear may need in the static int8 graph: each works on a float32 copy of its uint8
# input, 64 MiB for 64 channels at 512². Sliced by channels, each part needs a fraction.
SLICE_BYTES = 16 * 2**20


def _parts(channels: int, nbytes: int) -> int:
    """Into how many equal channel slices a buffer of ``nbytes`` over ``channels`` is cut so that
    each is at most SLICE_BYTES (1: it is small enough already, or the channels don't divide)."""
    parts = -(-nbytes // SLICE_BYTES)
    while 1 < parts < channels and channels % parts:
        parts += 1
    return parts if 1 < parts < channels else 1


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in inferred_value_info(model)}


def _slice_float_steps(model: onnx.ModelProto) -> int:
    """The float work between a DequantizeLinear and what follows it, sliced by channels where
    its float32 buffer would pass SLICE_BYTES: a bilinear Resize (DQ → Resize → Q becomes, per
    slice of the uint8 input, DQ → Resize → Q, then a uint8 Concat) and a float Conv (the last
    one, left in float: per slice of its input, DQ → Conv on that slice of the weight, summed).
    Returns the count."""
    graph, shapes = model.graph, _shapes(model)
    producers, consumers, inits = _index(graph)
    before: dict[int, list] = {}  # id(node) → nodes that take its place
    for node in graph.node:
        if node.op_type not in ("Resize", "Conv"):
            continue
        dequantize, users = producers.get(node.input[0]), consumers.get(node.output[0], [])
        shape = shapes.get(node.input[0] if node.op_type == "Conv" else node.output[0], [])
        if dequantize is None or dequantize.op_type != "DequantizeLinear" or len(shape) != 4 or not all(shape):
            continue
        parts = _parts(shape[1], 4 * int(np.prod(shape)))
        if node.op_type == "Resize":
            if parts == 1 or len(users) != 1 or users[0].op_type != "QuantizeLinear":
                continue
            quantize = users[0]
        elif parts == 1 or node.input[1] not in inits or producers.get(node.input[1]) is not None:
            continue  # a Conv: only the float ones (weights an initializer, not a DequantizeLinear)
        step, base = shape[1] // parts, node.output[0]
        graph.initializer.append(numpy_helper.from_array(np.full(parts, step, np.int64), f"{base}_slices"))
        slices = [f"{base}_in{k}" for k in range(parts)]
        new = [helper.make_node("Split", [dequantize.input[0], f"{base}_slices"], slices, name=f"{base}_split",
                                axis=1)]
        results, attributes = [], {a.name: helper.get_attribute_value(a) for a in node.attribute}
        for k, piece in enumerate(slices):
            new.append(helper.make_node("DequantizeLinear", [piece, *dequantize.input[1:]], [f"{piece}_f"],
                                        name=f"{piece}_dq"))
            if node.op_type == "Resize":  # the output size of one slice, a constant: the graph's shapes are fixed
                size = f"{base}_slice_size"
                if k == 0:
                    graph.initializer.append(numpy_helper.from_array(
                        np.array([shape[0], step, *shape[2:]], np.int64), size))
                new.append(helper.make_node("Resize", [f"{piece}_f", "", "", size], [f"{piece}_r"],
                                            name=f"{piece}_resize", **attributes))
                new.append(helper.make_node("QuantizeLinear", [f"{piece}_r", *quantize.input[1:]], [f"{piece}_q"],
                                            name=f"{piece}_q"))
                results.append(f"{piece}_q")
            else:
                weight = numpy_helper.to_array(inits[node.input[1]])[:, k * step:(k + 1) * step]
                graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), f"{piece}_weight"))
                bias = list(node.input[2:3]) if k == 0 else []
                new.append(helper.make_node("Conv", [f"{piece}_f", f"{piece}_weight", *bias], [f"{piece}_y"],
                                            name=f"{piece}_conv", **attributes))
                results.append(f"{piece}_y")
        if node.op_type == "Resize":
            new.append(helper.make_node("Concat", results, [quantize.output[0]], name=f"{base}_concat", axis=1))
            before[id(quantize)] = new
            before[id(node)] = []
        else:
            total = results[0]
            for k, result in enumerate(results[1:], 1):
                summed = base if k == parts - 1 else f"{base}_sum{k}"
                new.append(helper.make_node("Add", [total, result], [summed], name=f"{base}_add{k}"))
                total = summed
            before[id(node)] = new
        if len(consumers[dequantize.output[0]]) == 1:  # the slices have their own
            before[id(dequantize)] = []
    nodes = [n for node in graph.node for n in before.get(id(node), [node])]
    del graph.node[:]
    graph.node.extend(nodes)
    return sum(1 for replaced in before.values() if replaced)


def _save(model: onnx.ModelProto, target: Path, description: str) -> None:
    """Stamp a built model as ours, check it and write it (the same bytes for the same input)."""
    model.producer_name = PRODUCER
    model.producer_version = "1"
    model.doc_string = description
    onnx.checker.check_model(model)
    onnx.save(model, str(target))


def build_float32_model(source: Path, target: Path) -> None:
    """Write ``source`` (an fp16 graph like IS-Net's) to ``target`` computing in float32 throughout.

    This is what rembg runs as ``isnet-general-use``, rebuilt from the fp16 file
    when the fp32 original can't be fetched: the benchmark compares against it.
    """
    model = onnx.load(str(source))
    _drop_float_casts(model.graph)
    _to_float32(model.graph)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))


def float32_graph(source: Path, outputs: list[str] | None) -> onnx.ModelProto:
    """``source`` (an fp16 graph like IS-Net's) computing in float32, with only ``outputs``
    (None: the first): the graph that is calibrated and quantised to static int8."""
    model = onnx.load(str(source))
    _drop_float_casts(model.graph)
    _prune(model.graph, outputs or [model.graph.output[0].name])
    _to_float32(model.graph)
    return model


def build_float32_graph(source: Path, target: Path, outputs: list[str] | None) -> None:
    """Write :func:`float32_graph` of ``source`` to ``target`` (the isnet-general-fp32 reference)."""
    _save(float32_graph(source, outputs), target, "IS-Net general-use in float32, its mask output only.")


def float_kept_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes the static int8 build leaves in float: the last Conv (its output is the logit,
    whose range, about −2500 to +20, leaves no resolution near 0 where the mask's edge is
    decided), and everything after it (the final Resize and the Sigmoid)."""
    nodes = list(model.graph.node)
    last_conv = max(i for i, node in enumerate(nodes) if node.op_type == "Conv")
    return [node.name for node in nodes[last_conv:] if node.op_type not in ("Constant", "Shape", "Slice", "Concat")]


def build_static_int8_model(source: Path, target: Path, outputs: list[str] | None, table: Path) -> int:
    """Write the static int8 model built from ``source`` and the calibration ``table`` to ``target``.

    int8 weights (symmetric, per output channel, in 7 bits: -64..63) and uint8 activations
    (asymmetric, per tensor, ranges from ``table``: :mod:`tools.calibrate`), in QDQ form, which ONNX Runtime
    runs with integer kernels; :func:`float_kept_nodes` stay float. Then the float steps whose
    buffers would pass SLICE_BYTES are sliced by channels (:func:`_slice_float_steps`): the same
    masks, with 39 MiB less live at the peak of a run. Returns how many nodes were left in float.
    Raises ValueError when the table does not belong to this graph.
    """
    import json
    import tempfile

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data

    model = float32_graph(source, outputs)
    ranges = json.loads(table.read_text())["ranges"]
    tensors = {o for node in model.graph.node for o in node.output} | {i.name for i in model.graph.input}
    unknown = sorted(set(ranges) - tensors)
    if unknown:
        raise ValueError(f"{table.name} names tensors this graph does not have: {unknown[:3]}")
    data = TensorsData(CalibrationMethod.MinMax,
                       {name: (np.float32(low), np.float32(high)) for name, (low, high) in ranges.items()})
    kept = float_kept_nodes(model)
    with tempfile.TemporaryDirectory(prefix="bg-int8-") as work:
        cache, built = Path(work) / "ranges.json", Path(work) / "model.onnx"
        save_tensors_data(data, cache)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # its advice to pre-process is for graphs without shapes; ours has them
        try:
            # reduce_range: 7-bit weights, so that a pair of u8×s8 products (255 × 64 × 2 = 32,640)
            # never saturates the 16-bit sums of AVX2's integer path: the same masks with or without
            # VNNI, and OpenVINO's int8 on AVX2 alone passes the quality guard (docs/engines.md)
            quantize_static(model, built, None, quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=kept, calibration_cache_path=cache)
        finally:
            root.setLevel(level)
        del model
        quantized = onnx.load(str(built))
    _slice_float_steps(quantized)
    _drop_unused_initializers(quantized.graph)
    _save(quantized, target,
          "IS-Net general-use, static int8: int8 weights per output channel in 7 bits, uint8 activations "
          f"calibrated on {table.name}; the last Conv, Resize and Sigmoid in float32; float steps "
          f"sliced by channels where they would need a buffer over {SLICE_BYTES >> 20} MiB.")
    return len(kept)


def build_int8_model(source: Path, target: Path, outputs: list[str] | None) -> int:
    """Write the int8-weight model built from ``source`` to ``target``.

    ``outputs`` names the graph outputs to keep (None: only the first). Returns the number of Conv
    weights quantised. Raises ``ValueError`` if the graph lacks an output or
    has no Conv weight to quantise (not an IS-Net-like graph).
    """
    model = onnx.load(str(source))
    graph = model.graph
    _drop_float_casts(graph)
    _prune(graph, outputs or [graph.output[0].name])
    areas = output_areas(model)
    count = _quantize_conv_weights(graph, {name for name, area in areas.items() if area >= FLOAT_WEIGHT_AREA})
    _to_float32(graph)
    _split_concat_convs(graph)
    if count == 0:
        raise ValueError(f"{source.name}: no Conv weights to quantise")
    _save(model, target, "IS-Net general-use, Conv weights int8 per output channel (symmetric), "
                         "float32 where the output is 256² or larger.")
    return count


def build_split_model(source: Path, target: Path) -> int:
    """Write ``source`` (a float graph like u2netp's) to ``target`` with only its first output
    and each Conv(Concat) split into a sum of Convs; weights unchanged. Returns the split count.

    On u2netp at 320², 2 threads: peak 201 → 177 MB and 0.40 → 0.35 s a run, outputs equal
    to within 1.4·10⁻⁵ (README, "Memory and speed").
    """
    model = onnx.load(str(source))
    graph = model.graph
    _prune(graph, [graph.output[0].name])
    count = _split_concat_convs(graph)
    if count == 0:
        raise ValueError(f"{source.name}: no Conv(Concat) to split")
    _save(model, target, f"{source.stem}, first output only, each Conv(Concat) split into a sum of Convs.")
    return count


# Run in a fresh process: OpenVINO names the nodes it makes from a counter of the process, so
# only a fresh one writes the same .xml each time, and the build can be pinned by its checksum.
_IR_CODE = """
import sys
import openvino as ov
ov.save_model(ov.Core().read_model(sys.argv[1]), sys.argv[2], compress_to_fp16=False)
"""


def build_openvino_ir(source: Path, target: Path) -> None:
    """Write OpenVINO's IR of the ONNX model ``source`` to ``target`` (a ``.xml``; its weights go to
    the ``.bin`` beside it), weights in the precision they have: float32 weights in an IR are
    mapped from disk by OpenVINO's CPU plugin, where those of an ONNX file or fp16 ones are copied
    into memory (176 MB of IS-Net's). Raises ValueError when OpenVINO cannot convert it."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _IR_CODE, str(source), str(target)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        raise ValueError(f"OpenVINO could not convert {source.name}: {lines[-1]}")
