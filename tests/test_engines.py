"""Which engine and precision serve a model (service/model/engines.choose), what a start does when the
machine cannot run what is asked, and OpenVINO's compiled cache."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from service.model.catalog import CATALOG
from service.model.cpu import cpu_classes, has_bf16
from service.model.engines import Choice, Engine, EngineUnavailable, choose

from .support import start_server

ZEN4 = ("AVX2", "AVX-VNNI", "AVX512", "AVX512-VNNI", "AVX512_BF16")
ICE_LAKE = ("AVX2", "AVX512", "AVX512-VNNI")
HASWELL = ("AVX2",)
TINY, U2NETP = CATALOG["isnet-general-tiny"], CATALOG["u2netp"]
BF16_HERE = has_bf16(cpu_classes())


def pick(spec=TINY, engine="auto", precision="auto", classes=ZEN4, **kw) -> Choice:
    return choose(spec, engine, precision, kw.pop("device", "auto"), kw.pop("fallback", False), classes,
                  kw.pop("openvino", True), kw.pop("gpu", False))


@pytest.mark.parametrize("spec, classes, expected", [
    (TINY, ZEN4, Choice("openvino", "bfloat16", "isnet-general-ir")),
    (TINY, ICE_LAKE, Choice("openvino", "int8", "isnet-general-int8")),  # VNNI without bf16
    (TINY, HASWELL, Choice("openvino", "int8", "isnet-general-int8")),  # 7-bit weights: no saturation
    (U2NETP, ZEN4, Choice("openvino", "float32", "u2netp-rembg")),  # bf16 would move its masks
    (U2NETP, HASWELL, Choice("onnxruntime", "float32", "u2netp")),  # OpenVINO's is faster with AVX512 only
    (CATALOG["isnet-general-int8"], ZEN4, Choice("onnxruntime", "int8", "isnet-general-int8")),
    (CATALOG["isnet-general-ir"], HASWELL, Choice("openvino", "float32", "isnet-general-ir")),
])
def test_auto_takes_bf16_where_the_cpu_has_it_and_int8_elsewhere(spec, classes, expected):
    assert pick(spec, classes=classes) == expected


def test_the_int8_tier_is_the_operators_choice_and_runs_on_onnx_runtime_by_default():
    assert pick(precision="int8") == Choice("onnxruntime", "int8", "isnet-general-int8")
    assert pick(engine="openvino", precision="int8") == Choice("openvino", "int8", "isnet-general-int8")


def test_a_named_engine_gets_its_best_precision():
    assert pick(engine="openvino", classes=HASWELL) == Choice("openvino", "int8", "isnet-general-int8")
    assert pick(engine="openvino", precision="float32", classes=HASWELL) == Choice("openvino", "float32",
                                                                                  "isnet-general-ir")
    assert pick(engine="onnxruntime") == Choice("onnxruntime", "float32", "isnet-general-tiny")


def test_a_gpu_runs_the_float16_build_on_onnx_runtime():
    on_gpu = Choice("onnxruntime", "float16", "isnet-general-gpu", device="cuda")  # taking 8-bit pixels
    assert pick(device="cuda", gpu=True) == on_gpu
    assert pick(gpu=True) == on_gpu  # auto, where a GPU answers
    # TensorRT: the network that build wraps, at its one input shape
    assert pick(device="tensorrt", gpu=True) == Choice("onnxruntime", "float16", "isnet-general-use-fp16",
                                                       device="tensorrt")
    # a row without a float16 build runs as it is; an explicit precision is kept
    assert pick(U2NETP, gpu=True) == Choice("onnxruntime", "float32", "u2netp", device="cuda")
    assert pick(precision="float32", gpu=True) == Choice("onnxruntime", "float32", "isnet-general-tiny", device="cuda")


def test_x_model_used_names_a_gpu_device_and_leaves_the_cpu_unsaid():
    engine = Engine()
    engine.spec, engine.name, engine.precision = TINY, "onnxruntime", "float16"
    engine.device = "cuda"
    assert engine.label == "isnet-general-tiny (onnxruntime, f16, cuda)"
    engine.device, engine.precision = "cpu", "float32"
    assert engine.label == "isnet-general-tiny (onnxruntime, f32)"


def test_where_no_gpu_answers_auto_runs_what_the_cpu_runs_best():
    assert pick(gpu=False) == pick()  # the GPU requirements installed on a CPU-only host change nothing
    assert pick(gpu=False).device == "cpu"


def test_float16_is_for_the_float16_builds():
    assert pick(precision="float16") == Choice("onnxruntime", "float16", "isnet-general-gpu")
    with pytest.raises(EngineUnavailable, match="u2netp has no float16 build"):
        pick(U2NETP, precision="float16")
    with pytest.raises(EngineUnavailable, match="the float16 builds run on ONNX Runtime"):
        pick(engine="openvino", precision="float16")


def test_without_openvino_everything_runs_on_onnx_runtime():
    assert pick(openvino=False) == Choice("onnxruntime", "float32", "isnet-general-tiny")
    assert pick(U2NETP, openvino=False) == Choice("onnxruntime", "float32", "u2netp")


@pytest.mark.parametrize("request_, classes, openvino, words", [
    (dict(precision="bfloat16"), HASWELL, True, "needs AVX512_BF16 or AMX-BF16 (this CPU has AVX2)"),
    (dict(engine="onnxruntime", precision="bfloat16"), ZEN4, True, "ONNX Runtime has no bf16 kernels"),
    (dict(engine="openvino"), ZEN4, False, "the openvino package is not installed"),
    (dict(engine="openvino", device="cuda", gpu=True), ZEN4, True, "runs on the CPU only"),
    (dict(precision="int8", spec=U2NETP), ZEN4, True, "u2netp has no int8 build"),
    (dict(precision="float32", spec=CATALOG["isnet-general-int8"]), ZEN4, True, "is an int8 graph"),
    (dict(engine="onnxruntime", spec=CATALOG["isnet-general-ir"]), ZEN4, True, "ONNX Runtime cannot read it"),
])
def test_what_the_machine_cannot_run_is_refused_in_one_line(request_, classes, openvino, words):
    request_ = dict(request_)
    with pytest.raises(EngineUnavailable) as refused:
        pick(request_.pop("spec", TINY), classes=classes, openvino=openvino, **request_)
    message = str(refused.value)
    assert words in message and "BG_REMOVAL_FALLBACK=true" in message and "\n" not in message


def test_with_fallback_the_automatic_choice_serves_and_says_why():
    choice = pick(precision="bfloat16", classes=HASWELL, fallback=True)
    assert (choice.engine, choice.precision, choice.build) == ("openvino", "int8", "isnet-general-int8")
    assert "needs AVX512_BF16" in choice.reason


def test_a_start_asking_for_bf16_under_an_avx2_cap_stops_with_one_line(base_env, tmp_path):
    env = {**base_env, "BG_REMOVAL_MODEL": "u2netp", "BG_REMOVAL_PRECISION": "bfloat16", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    with pytest.raises(RuntimeError):
        start_server(env, tmp_path / "server.log", timeout=60)
    lines = (tmp_path / "server.log").read_text().strip().splitlines()
    assert "BG_REMOVAL_PRECISION=bfloat16 needs AVX512_BF16 or AMX-BF16 (this CPU has AVX2" in lines[-1]
    assert "Traceback" not in "\n".join(lines)


def test_under_an_avx2_cap_fallback_gives_way_and_auto_takes_openvinos_int8(base_env, tmp_path, sample_photo):
    env = {**base_env, "BG_REMOVAL_MODEL": "u2netp", "BG_REMOVAL_ENGINE": "onnxruntime",
           "BG_REMOVAL_PRECISION": "bfloat16", "BG_REMOVAL_FALLBACK": "true", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    server = start_server(env, tmp_path / "server.log", timeout=120)
    try:
        status = server.get("/api/bg/status").json()
        assert status["cpu"]["classes"] == ["AVX2"]
        assert status["model_used"] == "u2netp (onnxruntime, f32)"  # the automatic choice on AVX2
        assert "ONNX Runtime has no bf16 kernels" in status["engine"]["fallback_reason"]
        response = server.post("/api/bg/remove", files={"file": ("p.jpg", sample_photo.read_bytes())})
        assert response.status_code == 200 and response.headers["X-Model-Used"] == "u2netp (onnxruntime, f32)"
    finally:
        server.stop()
    env.update(BG_REMOVAL_MODEL="isnet-general-tiny", BG_REMOVAL_ENGINE="auto", BG_REMOVAL_PRECISION="auto",
               BG_REMOVAL_FALLBACK="false")
    server = start_server(env, tmp_path / "server-auto.log", timeout=120)
    try:  # the path an AVX2-only CPU takes: no bf16, so OpenVINO's int8 (7-bit weights: exact sums)
        response = server.post("/api/bg/remove", files={"file": ("p.jpg", sample_photo.read_bytes())})
        assert response.status_code == 200
        assert response.headers["X-Model-Used"] == "isnet-general-tiny (openvino, int8)"
    finally:
        server.stop()


def test_openvino_reuses_its_compiled_model_and_gives_the_same_mask(model_dir, tmp_path, sample_photo):
    from service.model.engines.openvino_engine import OpenVinoEngine
    from service.imaging.decode import decode_upload

    build = CATALOG["u2netp-rembg"]
    cache = tmp_path / "openvino-cache"
    cache.mkdir()
    shutil.copy(model_dir / build.filename, tmp_path / build.filename)
    rgb = decode_upload(sample_photo.read_bytes(), 1024, 40_000_000).rgb
    first = OpenVinoEngine(U2NETP, build, tmp_path / build.filename, "float32", 1, cache)
    second = OpenVinoEngine(U2NETP, build, tmp_path / build.filename, "float32", 1, cache)
    assert (first.cache, second.cache) == ("written", "used")
    assert len(list(cache.glob("*.blob"))) == 1
    a, b = (np.asarray(e.predict_mask(rgb), dtype=np.int16) for e in (first, second))
    assert np.abs(a - b).max() <= 1


def test_openvino_gives_its_activations_back_after_each_run(base_env):
    """u2netp's activations are some 110 MB at 320²: held between runs, the steps after the model
    would stack on them. In a child with the server's malloc settings, RSS after load, after the
    first run and after the third, in MiB."""
    import subprocess
    import sys

    from service.memory import MALLOC_DEFAULTS

    from .support import ROOT

    code = ("import numpy as np; from service.model.catalog import CATALOG; from service.config import Settings; "
            "from service.model.engines.openvino_engine import OpenVinoEngine; from service.memory import rss_mb; "
            "s = Settings.from_env(); b = CATALOG['u2netp-rembg']; "
            "e = OpenVinoEngine(CATALOG['u2netp'], b, s.model_dir / b.filename, 'float32', 1); "
            "x = np.random.default_rng(0).random((1, 3, 320, 320), dtype=np.float32); "
            "loaded = rss_mb(); e.run(x); first = rss_mb(); e.run(x); e.run(x); "
            "print(round(loaded), round(first), round(rss_mb()))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**base_env, **MALLOC_DEFAULTS},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded, first, third = map(int, result.stdout.split())
    # kept, they would add ~110 MB; released, what stays is the kernels' JIT code and OpenVINO's caches
    assert first - loaded < 40 and third - loaded < 40, (loaded, first, third)


def test_a_read_only_model_dir_compiles_without_a_cache(model_dir, tmp_path):
    from service.model.engines import compiled_cache_dir
    from service.config import Settings

    assert compiled_cache_dir(Settings(model_dir=tmp_path)) == tmp_path / "openvino-cache"
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert compiled_cache_dir(Settings(model_dir=blocked)) is None


@pytest.mark.skipif(not BF16_HERE, reason="this CPU has no bf16 dot products")
def test_the_default_runs_bf16_on_openvino_here(default_server, sample_photo):
    status = default_server.get("/api/bg/status").json()
    assert status["model_used"] == "isnet-general-tiny (openvino, bf16)"
    assert status["engine"]["build"] == "isnet-general-ir"
    response = default_server.post("/api/bg/remove", files={"file": ("a.jpg", sample_photo.read_bytes())})
    assert response.headers["X-Model-Used"] == "isnet-general-tiny (openvino, bf16)"
    assert Image.open(__import__("io").BytesIO(response.content)).mode == "RGBA"


def test_the_choice_imports_no_engine_or_image_library(base_env):
    """gunicorn's master makes the choice (to fetch the build and check its memory) and stays small."""
    import subprocess
    import sys

    from .support import ROOT

    code = ("import sys; from service import check_memory; from service.config import Settings; "
            "from service.model.engines import settings_choice; from service.model.catalog import CATALOG; "
            "from service.model.sizing import plan; s = Settings.from_env(); c = settings_choice(CATALOG[s.model], s); "
            "check_memory(s.model, c.build, c.engine); plan(s, c.device); "
            "print(sorted(m for m in ('numpy', 'PIL', 'flask', 'openvino', 'onnxruntime') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=base_env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
