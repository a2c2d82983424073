"""The pixels build (tools/pixels.py): scaling and normalising inside the graph, for a GPU, giving
the masks the server's own steps (service/imaging/network.py) give."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from service.config import Settings
from service.imaging.network import postprocess, preprocess
from service.model.catalog import CATALOG, IMAGENET_MEAN, IMAGENET_STD
from service.model.engines import Choice, create_engine, fetched_engine
from tools.evaluate import iou

from .test_quantize import build_afresh


def _tiny_network(size: int):
    """A stand-in network at ``size``², opset 15 like IS-Net's file: the mean of its three input
    planes, as a 1×1 Conv."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "thirds"], ["output"])], "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, size, size])],
        [numpy_helper.from_array(np.full((1, 3, 1, 1), 1 / 3, np.float32), "thirds")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])


@pytest.mark.parametrize("photo_size", [(50, 37), (200, 90), (64, 64), (3, 2)])
def test_the_graph_scales_normalises_and_scales_back_as_the_server_does(photo_size):
    """Both ways (up, down, each axis its own, none), against Pillow's LANCZOS and the server's
    normalising and 8-bit rounding: a level of 255 apart at most, and seldom."""
    import onnx
    import onnxruntime as ort

    from tools.pixels import OPSET, pixels_graph

    size = 64
    spec = replace(CATALOG["u2netp"], input_size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    model = pixels_graph(_tiny_network(size), "output", size, spec.mean, spec.std)
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == OPSET
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    rng = np.random.default_rng(sum(photo_size))
    smooth = Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8)).resize(photo_size, Image.Resampling.BICUBIC)
    noisy = np.clip(np.asarray(smooth, np.int16) + rng.integers(-40, 40, (*photo_size[::-1], 3)), 0, 255)
    photo = Image.fromarray(noisy.astype(np.uint8))

    mask = session.run(["mask"], {"image": np.asarray(photo)[None]})[0]
    expected = np.asarray(postprocess(preprocess(photo, spec).mean(axis=1, keepdims=True), photo.size))
    assert mask.dtype == np.uint8 and mask.shape == expected.shape == photo_size[::-1]
    difference = np.abs(mask.astype(int) - expected)
    assert difference.max() <= 1 and difference.mean() < 0.01, (difference.max(), difference.mean())


def test_the_gpu_build_is_pinned_and_takes_pixels(model_dir, tmp_path):
    """Built afresh from the fp16 IS-Net, it has the catalog's checksum (fetch_model verifies it)."""
    import onnx

    built = build_afresh("isnet-general-gpu", model_dir, tmp_path)
    graph = onnx.load(str(built), load_external_data=False).graph
    kinds = [(v.name, v.type.tensor_type.elem_type, [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim])
             for v in (*graph.input, *graph.output)]
    assert kinds == [("image", onnx.TensorProto.UINT8, [1, "height", "width", 3]),
                     ("mask", onnx.TensorProto.UINT8, ["height", "width"])]


def test_the_gpu_build_gives_the_masks_of_the_network_it_wraps(model_dir, photos):
    """On the CPU here (ONNX Runtime runs the same graph on CUDA): BG_REMOVAL_PRECISION=float16 serves
    the pixels build, whose masks are the plain fp16 network's between the server's own steps."""
    settings = replace(Settings.from_env({"MODEL_DIR": str(model_dir)}), engine="onnxruntime", precision="float16")
    engine = fetched_engine(CATALOG["isnet-general-tiny"], settings, threads=2, show_progress=False)
    assert engine.build.name == "isnet-general-gpu" and engine.build.pixels
    assert engine.label == "isnet-general-tiny (onnxruntime, f16)"
    plain = create_engine(CATALOG["isnet-general-tiny"], Choice("onnxruntime", "float16", "isnet-general-use-fp16"),
                          model_dir / CATALOG["isnet-general-use-fp16"].filename, replace(settings, threads=2))
    for name in ("astronaut", "rocket"):
        with Image.open(photos[name]) as image:
            rgb = image.convert("RGB")
        rgb.thumbnail((640, 640))
        mask, expected = engine.predict_mask(rgb), plain.predict_mask(rgb)
        assert mask.mode == "L" and mask.size == rgb.size
        difference = np.abs(np.asarray(mask, int) - np.asarray(expected))
        assert iou(np.asarray(mask), np.asarray(expected)) > 0.999 and difference.mean() < 0.5, \
            (name, difference.max(), difference.mean())
