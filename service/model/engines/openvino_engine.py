"""The OpenVINO backend: one compiled model and one inference request on the CPU plugin.

Precision is OpenVINO's inference-precision hint: ``bf16`` (AVX512_BF16 or AMX-BF16 dot
products; float32's range, so float32's masks) or ``f32``; an int8 (QDQ) graph runs its
quantized steps with integer kernels whatever the hint, and the rest at ``f32``. The hint is
always given: on a CPU with bf16, OpenVINO's own default would be bf16 for a float32 request.

Memory: OpenVINO maps an IR's float32 weights from disk and keeps its packed (bf16) copy beside
them; an ONNX file's or fp16 weights would be copied into memory first (docs/engines.md). Once
compiled, the mapped float32 pages, which the kernels no longer read, are released. Its memory
planner allocates the activations of a run at the run; they are released after it
(``release_memory``: about 10 ms a run to fault them in again, 108–128 MB less between runs).

Compiled models are cached in ``cache_dir`` (OpenVINO's CACHE_DIR), so that a restart imports
the compiled blob instead of compiling again.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np

from ..catalog import ModelSpec
from ...memory import drop_mapped_pages
from . import SHORT, Engine

log = logging.getLogger(__name__)

HINTS = {"float32": "f32", "bfloat16": "bf16", "int8": "f32"}


class OpenVinoEngine(Engine):
    name = "openvino"

    def __init__(self, spec: ModelSpec, build: ModelSpec, path: Path, precision: str, threads: int = 1,
                 cache_dir: Path | None = None):
        import openvino as ov  # heavy: only where a model is really run

        self.spec, self.build, self.precision, self.threads = spec, build, precision, threads
        self.version = ov.get_version().split("-")[0]
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": HINTS[precision], "INFERENCE_NUM_THREADS": threads,
                  "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
        if cache_dir is not None:
            config["CACHE_DIR"] = str(cache_dir)
        blobs = set(cache_dir.glob("*.blob")) if cache_dir is not None else set()
        log.info("compiling %s for OpenVINO %s on the CPU (%s)%s", build.name, self.version, SHORT[precision],
                 f"; a compiled copy in {cache_dir} is used if there is one" if cache_dir
                 else "; MODEL_DIR is read-only, so nothing is cached and every start compiles")
        started = time.perf_counter()
        if path.suffix == ".xml":  # an IR: compiled from its path, its weights mapped from disk
            compiled = core.compile_model(str(path), "CPU", config)
        else:
            model = core.read_model(str(path))
            if len(model.outputs) > 1:  # only the mask: the side outputs would cost their buffers
                wanted = next((r for r in model.get_results()
                               if build.output in r.output(0).get_names()), model.get_results()[0])
                model = ov.Model([wanted], model.get_parameters(), model.get_friendly_name())
            compiled = core.compile_model(model, "CPU", config)
            del model
        self.compile_s = time.perf_counter() - started
        self.cache = ("off" if cache_dir is None else
                      "written" if set(cache_dir.glob("*.blob")) - blobs else "used")
        self.request = compiled.create_infer_request()
        self._compiled = compiled
        self._lock = threading.Lock()
        # The kernels packed their weights while compiling: the float32 constants they were packed
        # from (mapped from the IR or the compiled blob) are not read again, so they leave memory.
        self.dropped_mb = drop_mapped_pages([path.with_suffix(".bin")] + ([cache_dir] if cache_dir else []))
        log.info("%s compiled in %.1f s (compiled cache: %s); %d MB of mapped weights released", build.name,
                 self.compile_s, self.cache, self.dropped_mb)

    def run(self, batch: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """:meth:`Engine.run`; at the deadline the request is cancelled."""
        with self._lock:  # one request: runs never overlap (the admission gate sees to it as well)
            try:
                self.request.start_async({0: batch}, share_inputs=True)
                if deadline is None:
                    self.request.wait()
                elif not self.request.wait_for(max(1, int((deadline - time.monotonic()) * 1000))):
                    self.request.cancel()
                    try:
                        self.request.wait()
                    except RuntimeError:  # "canceled", as asked
                        pass
                    raise TimeoutError("deadline")
                return self.request.get_output_tensor(0).data.copy()  # the request's buffer is reused
            except Exception as exc:
                raise self.failure(exc, timed_out=isinstance(exc, TimeoutError)) from exc
            finally:
                # The activations' buffers go back to the system between runs, so that the steps
                # after the model (the foreground, the answer's encoding) do not stack on them.
                self._compiled.release_memory()

    @property
    def runtime(self) -> str:
        return f"OpenVINO {self.version}, CPU plugin"

    def describe(self) -> dict:
        return {**super().describe(), "plugin": "CPU", "openvino": self.version,
                "compile_s": round(self.compile_s, 2), "compiled_cache": self.cache}
