"""The CPU's classes, read from its flags and capped as oneDNN caps itself, and the exact int8 mode."""
from __future__ import annotations

import pytest

from service.model import cpu
from service.model.catalog import CATALOG
from service.model.engines.onnxruntime_engine import OnnxRuntimeEngine

ZEN4 = "fpu sse avx2 fma avx512f avx512bw avx512vl avx512dq avx512_vnni avx_vnni avx512_bf16"
SAPPHIRE_RAPIDS = ZEN4 + " amx_tile amx_int8 amx_bf16"


@pytest.mark.parametrize("flags, expected", [
    ("fpu sse avx2 avx512f avx512_vnni amx_int8 amx_tile", "AMX"),
    ("avx2 avx512f avx512_vnni avx_vnni", "AVX512-VNNI"),
    ("avx2 avx_vnni", "AVX-VNNI"),
    ("sse4_2 avx avx2 fma", "AVX2"),
    ("sse4_2 avx", "no AVX2"),
])
def test_integer_class_is_read_from_the_cpu_flags(monkeypatch, flags, expected):
    monkeypatch.setattr(cpu, "cpu_info", lambda: {"model name": "Some CPU", "flags": flags})
    assert cpu.integer_class() == expected


@pytest.mark.parametrize("flags, cap, expected", [
    (ZEN4, None, ("AVX2", "AVX-VNNI", "AVX512", "AVX512-VNNI", "AVX512_BF16")),
    (SAPPHIRE_RAPIDS, None, ("AVX2", "AVX-VNNI", "AVX512", "AVX512-VNNI", "AVX512_BF16", "AMX-INT8", "AMX-BF16")),
    (ZEN4, "AVX2", ("AVX2",)),
    (ZEN4, "avx512_core_vnni", ("AVX2", "AVX-VNNI", "AVX512", "AVX512-VNNI")),
    (SAPPHIRE_RAPIDS, "AVX512_CORE_BF16", ("AVX2", "AVX-VNNI", "AVX512", "AVX512-VNNI", "AVX512_BF16")),
    ("sse4_2 avx", None, ()),
])
def test_classes_come_from_the_flags_under_onednns_cap(monkeypatch, flags, cap, expected):
    monkeypatch.setattr(cpu, "cpu_info", lambda: {"flags": flags})
    assert cpu.cpu_classes({"ONEDNN_MAX_CPU_ISA": cap} if cap else {}) == expected


def test_a_cap_to_avx2_takes_bf16_away():
    assert cpu.has_bf16(("AVX2", "AVX512_BF16")) and not cpu.has_bf16(("AVX2", "AVX-VNNI"))


@pytest.mark.parametrize("kind, exact", [("AVX2", True), ("AVX512-VNNI", False)])
def test_int8_runs_in_exact_mode_only_where_u8s8_can_saturate(monkeypatch, model_dir, kind, exact):
    from service.model.engines import onnxruntime_engine

    monkeypatch.setattr(onnxruntime_engine, "integer_class", lambda: kind)
    spec = CATALOG["isnet-general-int8"]
    assert OnnxRuntimeEngine(spec, model_dir / spec.filename).exact_int8 is exact
