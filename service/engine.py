"""The one object that owns the model: an ONNX Runtime session, created once per process."""
from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .catalog import ModelSpec
from .config import Settings
from .errors import InferenceFailed, OutOfMemory, TimedOut
from .imaging import postprocess, preprocess

log = logging.getLogger(__name__)

# The integer-instruction classes ONNX Runtime has int8 kernels for, best first: (cpuinfo flag, name).
INTEGER_CLASSES = (("amx_int8", "AMX"), ("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI"), ("avx2", "AVX2"))
# Classes whose u8×s8 products are summed in 32 bits (the others pair them into 16 bits, which saturate).
EXACT_U8S8 = ("AMX", "AVX512-VNNI", "AVX-VNNI")
# How ONNX Runtime words a failed allocation: C++'s bad_alloc, its own allocators, CUDA's.
_OUT_OF_MEMORY = re.compile(r"bad_alloc|bad allocation|failed to allocate|out of memory|memoryallocation", re.I)


def cpu_info() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.split("\n\n")[0].splitlines():
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    return fields


def integer_class() -> str:
    """This CPU's best integer-instruction class for int8 kernels: AMX, AVX512-VNNI, AVX-VNNI,
    AVX2, or "no AVX2"."""
    flags = set(cpu_info().get("flags", "").split())
    return next((name for flag, name in INTEGER_CLASSES if flag in flags), "no AVX2")


class Engine:
    """Runs one catalog model on the CPU with options chosen for a small memory footprint.

    The CPU arena and memory-pattern planner are off: both keep the largest
    activations of a 1024² run allocated between requests. Buffer reuse is off
    too: the planner hands a freed 64 MiB activation buffer to a later, smaller
    tensor, keeping it alive far past its own tensor, and on IS-Net at 1024² that
    costs about 250 MB of peak and 24–31% of speed (README, "Memory and speed").
    ``threads`` sets ONNX Runtime's intra-op thread count (inter-op stays 1, sequential);
    ``mem_reuse`` exists to measure the trade (``python -m service bench --compare-reuse``).

    ``float_weights`` trades memory for speed on a model with int8 weights
    (isnet-general-tiny): ONNX Runtime folds each DequantizeLinear into a float32
    constant at load, so the Convs get prepacked weights and its blocked (NCHWc)
    kernels. Measured on IS-Net at 1024², 2 threads: 2.6–2.8 s → 2.2 s a run,
    peak 335 → 463 MB (README, "Memory and speed"). No effect on float models.
    """

    def __init__(self, spec: ModelSpec, path: Path, threads: int = 1, mem_reuse: bool = False,
                 float_weights: bool = False, device: str = "cpu", fallback: bool = False):
        import onnxruntime as ort  # heavy: only where a model is really run

        from .device import gpu_description, place

        self.placement = place(device, ort.get_available_providers(), fallback, path.parent / "tensorrt-cache")

        options = ort.SessionOptions()
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
        self.integer_class = integer_class()
        self.exact_int8 = self.integer_class not in EXACT_U8S8
        if self.exact_int8:
            options.add_session_config_entry("session.x64quantprecision", "1")
        self.spec = spec
        self.threads = threads
        self.float_weights = float_weights
        self.session = ort.InferenceSession(str(path), options, providers=self.placement.providers)
        self.providers = self.session.get_providers()  # what ONNX Runtime really assigned
        self.gpu = gpu_description() if self.placement.device != "cpu" else None  # read once: nvidia-smi
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = spec.output or self.session.get_outputs()[0].name

    @classmethod
    def fetched(cls, spec: ModelSpec, settings: Settings, threads: int, show_progress: bool = True) -> "Engine":
        """The engine for ``spec`` outside the server (CLI, bench, eval): its file fetched or
        verified in MODEL_DIR, the configured weights, ``threads`` threads."""
        from .fetch import fetch_model

        path = fetch_model(spec, settings.model_dir, settings.mirror, show_progress=show_progress)
        return cls(spec, path, threads, float_weights=settings.float_weights, device=settings.device,
                   fallback=settings.fallback)

    def run(self, batch: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """Network input (1, 3, S, S) float32 → its output (1, 1, S, S) float32.

        With a ``deadline`` (a ``time.monotonic()`` value) the run is stopped there
        by ONNX Runtime's terminate flag, which it checks between nodes, and
        TimedOut is raised. A failed allocation raises OutOfMemory (503), any other failure
        InferenceFailed; the session stays usable for the next call.
        """
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
            if options.terminate:
                raise TimedOut("the image took longer than the time limit; retry when the server "
                               "is less busy, or send a smaller image", retry_after=5) from exc
            if isinstance(exc, MemoryError) or _OUT_OF_MEMORY.search(str(exc)):
                raise self._out_of_memory(exc) from exc
            log.error("inference failed: %s", exc)
            raise InferenceFailed("the model failed on this image; the error is in the server log") from exc
        finally:
            if timer is not None:
                timer.cancel()

    def predict_mask(self, rgb: Image.Image, deadline: float | None = None) -> Image.Image:
        """RGB image → soft foreground mask, mode L, same size as ``rgb``."""
        try:
            return postprocess(self.run(preprocess(rgb, self.spec), deadline), rgb.size, self.spec.activation)
        except MemoryError as exc:  # numpy's, around the run
            raise self._out_of_memory(exc) from exc

    def _out_of_memory(self, exc: BaseException) -> OutOfMemory:
        log.error("%s: out of memory: %s", self.spec.name, str(exc).strip()[:300] or type(exc).__name__)
        return OutOfMemory(f"{self.spec.name} could not get the memory it needs for this run; retry shortly",
                           retry_after=10)
