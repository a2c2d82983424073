"""The int8 build of isnet-general-tiny: the quantiser's arithmetic and the built graph."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.catalog import CATALOG
from service.fetch import fetch_model, verify
from service.quantize import FLOAT_WEIGHT_AREA, output_areas, quantize_per_channel

from .support import mirror


def test_per_channel_quantisation_is_symmetric_with_known_scales():
    weight = np.array([[[[1.27, -0.635]]], [[[0.0, 0.0]]], [[[-2.54, 0.01]]]], dtype=np.float32)
    q, scale = quantize_per_channel(weight)
    assert q.dtype == np.int8 and scale.dtype == np.float32 and scale.shape == (3,)
    assert np.allclose(scale, [0.01, 1.0, 0.02])
    assert q[0].ravel().tolist() == [127, -64] and q[1].ravel().tolist() == [0, 0]
    assert q[2].ravel().tolist() == [-127, 0]


def test_quantisation_error_is_within_half_a_step():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(8, 4, 3, 3)).astype(np.float32)
    q, scale = quantize_per_channel(weight)
    error = np.abs(q * scale[:, None, None, None] - weight)
    assert np.all(error <= scale[:, None, None, None] / 2 + 1e-7)


@pytest.fixture(scope="module")
def built_tiny(tmp_path_factory, model_dir) -> Path:
    """isnet-general-tiny built afresh from the fp16 IS-Net in the model cache or mirror."""
    source = mirror()
    return fetch_model(CATALOG["isnet-general-tiny"], tmp_path_factory.mktemp("build"),
                       mirror=Path(source) if source else None, show_progress=False)


@pytest.mark.parametrize("int8", [True, False], ids=["int8 weight", "float weight"])
def test_split_convolution_sums_equal_the_convolution_of_the_concatenation(int8):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from service.quantize import _quantize_conv_weights, _split_concat_convs

    rng = np.random.default_rng(0)
    weight = rng.normal(size=(4, 5, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Relu", ["a"], ["a_relu"]),
         helper.make_node("Conv", ["b", "w0"], ["b_conv"], pads=[1, 1, 1, 1]),
         helper.make_node("Concat", ["a_relu", "b_conv"], ["cat"], axis=1),
         helper.make_node("Conv", ["cat", "w", "bias"], ["y"], pads=[1, 1, 1, 1])],
        "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 2, 6, 6]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 1, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
        [numpy_helper.from_array(weight, "w"),
         numpy_helper.from_array(np.ones((3, 1, 3, 3), np.float32), "w0"),
         numpy_helper.from_array(np.arange(4, dtype=np.float32), "bias")],
    )
    # "a" has no Conv behind it to read its channel count from: give it one.
    graph.node.insert(0, helper.make_node("Conv", ["a0", "wa"], ["a"]))
    graph.input[0].name = "a0"
    graph.initializer.append(numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "wa"))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    if int8:
        _quantize_conv_weights(model.graph)
    inputs = {"a0": rng.normal(size=(1, 2, 6, 6)).astype(np.float32),
              "b": rng.normal(size=(1, 1, 6, 6)).astype(np.float32)}

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, inputs)[0]

    before = run(model)
    assert _split_concat_convs(model.graph) == 1
    onnx.checker.check_model(model)
    assert "Concat" not in [n.op_type for n in model.graph.node]
    assert np.allclose(run(model), before, atol=1e-5)


def test_build_is_deterministic_and_matches_the_pinned_checksum(built_tiny):
    # fetch_model verified it already; check again in plain sight, and that the
    # 88 MB fp16 ingredient was not kept beside it.
    assert verify(built_tiny, CATALOG["isnet-general-tiny"].checksum)
    assert sorted(p.name for p in built_tiny.parent.iterdir()) == ["isnet-general-tiny.onnx"]


def test_built_graph_has_int8_conv_weights_and_float_activations(built_tiny):
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(built_tiny))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    areas = output_areas(model)
    convs = [n for n in graph.node if n.op_type == "Conv"]
    # IS-Net's 114 Convs on the kept output, 50 of which read a Concat and became
    # one Conv per concatenated input (164 in all)
    assert len(convs) == 164
    float_weights = 0
    for conv in convs:
        assert conv.input[0] not in producers or producers[conv.input[0]].op_type != "Concat"
        if areas[conv.output[0]] >= FLOAT_WEIGHT_AREA:  # the finest stages keep float32 weights
            assert inits[conv.input[1]].data_type == TensorProto.FLOAT
            float_weights += int(np.prod(inits[conv.input[1]].dims))
            continue
        dequantize = producers[conv.input[1]]
        assert dequantize.op_type == "DequantizeLinear"
        assert inits[dequantize.input[0]].data_type == TensorProto.INT8
        assert [a.i for a in dequantize.attribute if a.name == "axis"] == [0]
    assert 0 < float_weights < 1_000_000  # of IS-Net's 44 M
    assert not any(n.op_type == "Cast" for n in graph.node)
    assert all(t.data_type != TensorProto.FLOAT16 for t in graph.initializer)
    assert [o.name for o in graph.output] == ["output"]
    assert graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT


def test_u2netp_build_is_pinned_and_computes_what_rembgs_file_computes(model_dir, tmp_path):
    import onnx
    import onnxruntime as ort

    source = mirror()
    built = fetch_model(CATALOG["u2netp"], tmp_path, mirror=Path(source) if source else None,
                        show_progress=False)
    assert verify(built, CATALOG["u2netp"].checksum)
    graph = onnx.load(str(built)).graph
    producers = {o: n for n in graph.node for o in n.output}
    assert len(graph.output) == 1
    assert not any(n.op_type == "Conv" and producers.get(n.input[0], n).op_type == "Concat" for n in graph.node)

    x = np.random.default_rng(0).normal(size=(1, 3, 320, 320)).astype(np.float32)
    original = model_dir / CATALOG["u2netp-rembg"].filename
    before, after = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input.1": x})[0]
                     for p in (original, built))
    assert np.abs(after - before).max() < 1e-4
