"""The ONNX Runtime backend: one session, created once per process, on the CPU, CUDA or TensorRT."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np

from ..catalog import ModelSpec
from ..cpu import EXACT_U8S8, integer_class
from . import Engine

log = logging.getLogger(__name__)


class OnnxRuntimeEngine(Engine):
    """Runs one catalog build with options chosen for a small memory footprint.

    The CPU arena and memory-pattern planner are off: both keep the largest
    activations of a 1024² run allocated between requests. Buffer reuse is off
    too: the planner hands a freed 64 MiB activation buffer to a later, smaller
    tensor, keeping it alive far past its own tensor, and on IS-Net at 1024² that
    costs about 250 MB of peak and 24–31% of speed (docs/performance.md).
    ``threads`` sets ONNX Runtime's intra-op thread count (inter-op stays 1, sequential);
    ``mem_reuse`` exists to measure the trade (``python -m tools bench --compare-reuse``).

    ``float_weights`` trades memory for speed on a model with int8 weights
    (isnet-general-tiny): ONNX Runtime folds each DequantizeLinear into a float32
    constant at load, so the Convs get prepacked weights and its blocked (NCHWc)
    kernels. Measured on IS-Net at 1024², 2 threads: 2.6–2.8 s → 2.2 s a run,
    peak 335 → 463 MB (docs/performance.md). No effect on float models.

    On CUDA and TensorRT (:mod:`service.model.device`) ONNX Runtime keeps its own defaults: the
    activations live in CUDA's arena, capped per session, not in the host's memory. The device
    reported is the one the session was really given.
    """

    name = "onnxruntime"

    def __init__(self, spec: ModelSpec, path: Path, threads: int = 1, mem_reuse: bool = False,
                 float_weights: bool = False, device: str = "cpu", fallback: bool = False,
                 build: ModelSpec | None = None, precision: str | None = None):
        import onnxruntime as ort  # heavy: only where a model is really run

        from ..device import place, preload_gpu_libraries, probe

        self.placement = place(device, probe(), fallback, path.parent / "tensorrt-cache")
        if self.placement.device != "cpu":
            preload_gpu_libraries()
        # ONNX Runtime's own log (a provider that did not start, in red, over several lines) only at
        # LOG_LEVEL=debug: what it means is said once, in the start log's line (_check_placement)
        ort.set_default_logger_severity(2 if log.isEnabledFor(logging.DEBUG) else 4)

        options = ort.SessionOptions()
        if self.placement.device == "cpu":  # on a GPU the activations live in CUDA's capped arena
            options.enable_cpu_mem_arena = False
            options.enable_mem_pattern = False
            options.enable_mem_reuse = mem_reuse
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        if float_weights:
            options.add_session_config_entry("session.disable_quant_qdq", "1")
        # Without VNNI or AMX, ONNX Runtime's u8×s8 kernels sum pairs of products in 16 bits, which
        # can saturate; its u8×u8 path is exact there, and gives the same masks as the VNNI kernels
        # (checked on isnet-general-int8: identical on ../shared/eval). With VNNI it is only slower
        # (0.7 → 2.3 s a run), so it is asked for only where it is needed.
        # Only builds with integer kernels (static int8) ask: with it, ONNX Runtime 1.32 cannot load
        # isnet-general-tiny, whose int8 weights it widens to float32 at load anyway ("Attempt to
        # replace the existing tensor", seen on an AVX2-only AMD EPYC).
        self.spec, self.build = spec, build or spec
        self.precision = precision or self.build.precision or "float32"
        self.integer_class = integer_class()
        self.exact_int8 = self.integer_class not in EXACT_U8S8 and self.precision == "int8"
        if self.exact_int8:
            options.add_session_config_entry("session.x64quantprecision", "1")
        self.threads = threads
        self.float_weights = float_weights
        self.session = ort.InferenceSession(str(path), options, providers=self.placement.providers)
        self.session.disable_fallback()  # a run that fails on the GPU raises, never moves to the CPU unsaid
        self._check_placement(fallback)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.build.output or self.session.get_outputs()[0].name

    def _check_placement(self, fallback: bool) -> None:
        """The device is what ONNX Runtime really assigned (``get_providers()``), with the reason
        where it is not the placement's; a GPU device asked for by name that did not start stops
        the start (DeviceUnavailable) unless ``fallback``."""
        from ..device import PROVIDERS, DeviceUnavailable, assigned_device, gpu_description

        placement = self.placement
        self.providers = self.session.get_providers()
        self.device = assigned_device(self.providers)
        self.device_reason = placement.fallback_reason
        if self.device != placement.device:
            self.device_reason = (f"ONNX Runtime could not start {PROVIDERS[placement.device]} and runs on "
                                  f"{', '.join(self.providers)} (LOG_LEVEL=debug shows its own words)")
            if placement.requested != "auto" and not fallback:
                raise DeviceUnavailable(f"BG_REMOVAL_DEVICE={placement.requested}: {self.device_reason}; or set "
                                        "BG_REMOVAL_FALLBACK=true to serve on what runs")
        self.gpu = gpu_description() if self.device != "cpu" else None  # read once: nvidia-smi

    def run(self, batch: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """:meth:`Engine.run`; the deadline sets ONNX Runtime's terminate flag, which it checks between nodes."""
        import onnxruntime as ort

        options = ort.RunOptions()
        timer = None
        if deadline is not None:
            timer = threading.Timer(max(0.0, deadline - time.monotonic()), setattr, (options, "terminate", True))
            timer.daemon = True
            timer.start()
        try:
            return self.session.run([self.output_name], {self.input_name: batch}, options)[0]
        except Exception as exc:
            raise self.failure(exc, timed_out=options.terminate) from exc
        finally:
            if timer is not None:
                timer.cancel()

    @property
    def runtime(self) -> str:
        return ", ".join(self.providers)

    def describe(self) -> dict:
        placement = self.placement
        return {**super().describe(), "providers": self.providers, "requested_device": placement.requested,
                "device_fallback_reason": self.device_reason, "gpu": self.gpu,
                "integer_class": self.integer_class, "exact_int8_mode": self.exact_int8}
