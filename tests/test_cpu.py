"""The CPU's integer-instruction class, and the exact int8 mode chosen from it."""
from __future__ import annotations

import pytest

from service import engine
from service.catalog import CATALOG


@pytest.mark.parametrize("flags, expected", [
    ("fpu sse avx2 avx512f avx512_vnni amx_int8 amx_tile", "AMX"),
    ("avx2 avx512f avx512_vnni avx_vnni", "AVX512-VNNI"),
    ("avx2 avx_vnni", "AVX-VNNI"),
    ("sse4_2 avx avx2 fma", "AVX2"),
    ("sse4_2 avx", "no AVX2"),
])
def test_integer_class_is_read_from_the_cpu_flags(monkeypatch, flags, expected):
    monkeypatch.setattr(engine, "cpu_info", lambda: {"model name": "Some CPU", "flags": flags})
    assert engine.integer_class() == expected


@pytest.mark.parametrize("kind, exact", [("AVX2", True), ("AVX512-VNNI", False)])
def test_int8_runs_in_exact_mode_only_where_u8s8_can_saturate(monkeypatch, model_dir, kind, exact):
    monkeypatch.setattr(engine, "integer_class", lambda: kind)
    spec = CATALOG["isnet-general-int8"]
    assert engine.Engine(spec, model_dir / spec.filename).exact_int8 is exact
