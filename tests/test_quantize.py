"""The int8 build of isnet-general-tiny: the quantiser's arithmetic and the built graph."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.model.catalog import CATALOG
from service.model.fetch import fetch_model, verify
from tools.quantize import FLOAT_WEIGHT_AREA, output_areas, quantize_per_channel



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


def build_afresh(name: str, model_dir: Path, folder: Path) -> Path:
    """Catalog model ``name`` built in ``folder`` from its base in ``model_dir`` (a mirror that
    holds the base alone, so that the build runs rather than a copy of the built file)."""
    base = CATALOG[CATALOG[name].sources[0].base]
    (folder / "base").mkdir()
    (folder / "base" / base.filename).symlink_to(model_dir / base.filename)
    return fetch_model(CATALOG[name], folder / "built", mirror=folder / "base", show_progress=False)


@pytest.fixture(scope="module")
def built_tiny(tmp_path_factory, model_dir) -> Path:
    """isnet-general-tiny built afresh from the fp16 IS-Net."""
    return build_afresh("isnet-general-tiny", model_dir, tmp_path_factory.mktemp("build"))


@pytest.mark.parametrize("int8", [True, False], ids=["int8 weight", "float weight"])
def test_split_convolution_sums_equal_the_convolution_of_the_concatenation(int8):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from tools.quantize import _quantize_conv_weights, _split_concat_convs

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

    built = build_afresh("u2netp", model_dir, tmp_path)
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


@pytest.fixture(scope="module")
def built_int8(tmp_path_factory, model_dir) -> Path:
    """isnet-general-int8 built afresh from the fp16 IS-Net and the committed calibration table;
    fetch_model verifies it against the catalog's pinned sha256, so the build is reproducible."""
    return build_afresh("isnet-general-int8", model_dir, tmp_path_factory.mktemp("build-int8"))


def test_static_int8_build_is_pinned_and_quantises_all_but_the_tail(built_int8):
    import onnx
    from onnx import TensorProto, numpy_helper

    assert verify(built_int8, CATALOG["isnet-general-int8"].checksum)
    graph = onnx.load(str(built_int8)).graph
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    quantized = [c for c in convs if c.input[1] in producers]
    assert len(quantized) == 113
    for conv in quantized:  # integer arithmetic: 8-bit input, int8 weights per output channel
        activation, weight = producers[conv.input[0]], producers[conv.input[1]]
        assert activation.op_type == "DequantizeLinear" and weight.op_type == "DequantizeLinear"
        assert inits[weight.input[0]].data_type == TensorProto.INT8
        # in 7 bits: two u8×s8 products never pass AVX2's 16-bit sums (255 × 64 × 2 < 32,767)
        assert np.abs(numpy_helper.to_array(inits[weight.input[0]]).astype(int)).max() <= 64
        assert inits[activation.input[2]].data_type == TensorProto.UINT8
        assert len(inits[weight.input[1]].dims) == 1  # one scale per output channel
    # the float-kept nodes: the last Conv (the logit; in channel slices, summed), the final Resize
    # and the Sigmoid
    tail = [c for c in convs if c not in quantized]
    assert len(tail) == 4 and all(inits[c.input[1]].data_type == TensorProto.FLOAT for c in tail)
    resize = producers[producers["output"].input[0]]
    assert producers["output"].op_type == "Sigmoid" and resize.op_type == "Resize"
    assert producers[resize.input[0]].op_type == "Add"


def test_the_int8_builds_float_steps_are_sliced_and_give_the_same_mask(built_int8, model_dir, tmp_path, monkeypatch,
                                                                      sample_photo):
    import onnx
    import onnxruntime as ort

    import tools.quantize as quantize
    from service.imaging.decode import decode_upload
    from service.imaging.network import preprocess

    def float_buffers(path: Path) -> list[int]:
        """Bytes of the float32 copy each Resize or float Conv behind a DequantizeLinear works on."""
        model = onnx.load(str(path))
        shapes = quantize._shapes(model)
        producers = {o: n for n in model.graph.node for o in n.output}
        return [4 * int(np.prod(shapes[n.output[0] if n.op_type == "Resize" else n.input[0]]))
                for n in model.graph.node if n.op_type in ("Resize", "Conv") and n.input[0] in producers
                and producers[n.input[0]].op_type == "DequantizeLinear"
                and (n.op_type == "Resize" or n.input[1] not in producers)]

    sliced_buffers = float_buffers(built_int8)
    assert max(sliced_buffers) <= quantize.SLICE_BYTES
    monkeypatch.setattr(quantize, "SLICE_BYTES", 2**40)  # nothing sliced
    whole = tmp_path / "unsliced.onnx"
    quantize.build_static_int8_model(model_dir / CATALOG["isnet-general-use-fp16"].filename, whole, ["output"],
                                     quantize.CALIBRATION / "isnet-general-use.json")
    whole_buffers = float_buffers(whole)
    assert max(whole_buffers) == 64 * 2**20 and len(whole_buffers) < len(sliced_buffers)  # 64 channels at 512²
    x = preprocess(decode_upload(sample_photo.read_bytes(), 1024, 40_000_000).rgb, CATALOG["isnet-general-int8"])
    sliced, unsliced = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
                        for p in (built_int8, whole))
    assert np.abs(sliced - unsliced).max() < 1e-4  # only the float sums' order differs


def test_static_int8_build_refuses_a_table_of_another_graph(model_dir, tmp_path):
    from tools.quantize import build_static_int8_model

    table = tmp_path / "table.json"
    table.write_text('{"ranges": {"no_such_tensor": [0.0, 1.0]}}')
    with pytest.raises(ValueError, match="no_such_tensor"):
        build_static_int8_model(model_dir / CATALOG["isnet-general-use-fp16"].filename, tmp_path / "out.onnx",
                                ["output"], table)
    assert not (tmp_path / "out.onnx").exists()
