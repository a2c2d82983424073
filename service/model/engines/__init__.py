"""The engines that run a model: one interface, the backends beside it, the choice between them.

Every engine loads one catalog build, runs it (``run``: network input → output), predicts a mask
(``predict_mask``) and describes itself (``describe``, ``label``) for the start log, the status
endpoints and ``X-Model-Used``. Backends: ONNX Runtime (:mod:`.onnxruntime_engine`: the CPU, CUDA,
TensorRT) and OpenVINO (:mod:`.openvino_engine`: the CPU, with bf16 and int8 kernels).

Which engine and precision serve a catalog name is chosen once, at start, by :func:`choose`, from
BG_REMOVAL_ENGINE, BG_REMOVAL_PRECISION, BG_REMOVAL_DEVICE and this CPU's classes
(:mod:`service.model.cpu`); the build that runs under the name follows from the catalog row
(:attr:`ModelSpec.openvino`, :attr:`ModelSpec.int8`).
"""
from __future__ import annotations

import importlib.util
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..catalog import CATALOG, ModelSpec
from ..cpu import BF16_CLASSES, auto_threads, cpu_classes, has_bf16

if TYPE_CHECKING:  # the choice runs in gunicorn's master too, which stays without numpy, PIL and Flask
    import numpy as np
    from PIL import Image

    from ...errors import OutOfMemory

log = logging.getLogger(__name__)

ENGINES = ("auto", "onnxruntime", "openvino")
PRECISIONS = ("auto", "float32", "float16", "bfloat16", "int8")
SHORT = {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "int8": "int8"}
# How the engines word a failed allocation: C++'s bad_alloc, ONNX Runtime's allocators, CUDA's.
OUT_OF_MEMORY = re.compile(r"bad_alloc|bad allocation|failed to allocate|out of memory|memoryallocation", re.I)


class EngineUnavailable(RuntimeError):
    """The engine, precision or device asked for cannot run here; the message says why and what to set."""


class Engine:
    """What the pipeline needs of an engine. A backend sets the attributes and implements ``run``.

    ``spec`` is the catalog row served (the name users asked for), ``build`` the row whose file
    runs under it, ``precision`` one of float32, bfloat16, int8, ``threads`` the engine's threads.
    """
    name = "engine"
    spec: ModelSpec
    build: ModelSpec
    precision: str
    threads: int
    device = "cpu"
    choice_reason: str | None = None  # why this is not what was asked for (BG_REMOVAL_FALLBACK)
    device_reason: str | None = None  # why the device is not the one asked for (service/model/device.py)

    def run(self, batch: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """Network input (1, 3, S, S) float32 → its output (1, 1, S, S) float32; for a pixels build
        (``build.pixels``) the photo's pixels (1, H, W, 3) uint8 → its mask (H, W) uint8. At ``deadline``
        (a ``time.monotonic()`` value) the run stops and TimedOut is raised; a failed allocation
        raises OutOfMemory (503), any other failure InferenceFailed; the engine stays usable."""
        raise NotImplementedError

    def predict_mask(self, rgb: Image.Image, deadline: float | None = None) -> Image.Image:
        """RGB image → soft foreground mask, mode L, same size as ``rgb``."""
        import numpy as np
        from PIL import Image

        from ...imaging.network import postprocess, preprocess

        try:
            if self.build.pixels:  # scaled, normalised and scaled back where the graph runs
                return Image.fromarray(self.run(np.asarray(rgb)[None], deadline), "L")
            return postprocess(self.run(preprocess(rgb, self.spec), deadline), rgb.size, self.spec.activation)
        except MemoryError as exc:  # numpy's, around the run
            raise self.out_of_memory(exc) from exc

    @property
    def label(self) -> str:
        """The name served and how it runs, as X-Model-Used says it: ``isnet-general-tiny (openvino, bf16)``
        on the CPU, ``isnet-general-tiny (onnxruntime, f16, cuda)`` on a GPU."""
        where = "" if self.device == "cpu" else f", {self.device}"
        return f"{self.spec.name} ({self.name}, {SHORT[self.precision]}{where})"

    @property
    def runtime(self) -> str:
        """What executes the graph, for the start log (ONNX Runtime's providers, OpenVINO's plugin)."""
        return self.name

    def describe(self) -> dict:
        """What runs, for the status endpoints and the start log."""
        return {"name": self.name, "precision": self.precision, "build": self.build.name,
                "device": self.device, "threads": self.threads, "fallback_reason": self.choice_reason,
                "device_fallback_reason": self.device_reason}

    def failure(self, exc: Exception, timed_out: bool) -> Exception:
        """The typed error for a run that raised ``exc`` (``timed_out``: stopped at its deadline)."""
        from ...errors import InferenceFailed, TimedOut

        if timed_out:
            return TimedOut("the image took longer than the time limit; retry when the server "
                            "is less busy, or send a smaller image", retry_after=5)
        if isinstance(exc, MemoryError) or OUT_OF_MEMORY.search(str(exc)):
            return self.out_of_memory(exc)
        log.error("inference failed: %s", exc)
        return InferenceFailed("the model failed on this image; the error is in the server log")

    def out_of_memory(self, exc: BaseException) -> OutOfMemory:
        from ...errors import OutOfMemory

        log.error("%s: out of memory: %s", self.spec.name, str(exc).strip()[:300] or type(exc).__name__)
        return OutOfMemory(f"{self.spec.name} could not get the memory it needs for this run; retry shortly",
                           retry_after=10)


@dataclass(frozen=True)
class Choice:
    """The engine and precision that serve a catalog name, the build that runs, and why it is not
    what was asked for (None when it is); the device it runs on (service/model/device.py) and why that
    is not the one asked for."""
    engine: str
    precision: str
    build: str
    reason: str | None = None
    device: str = "cpu"
    device_reason: str | None = None


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def _build(spec: ModelSpec, engine: str, precision: str, device: str = "cpu") -> str | None:
    if precision in ("int8", "float16"):
        build = spec.name if spec.precision == precision else {"int8": spec.int8, "float16": spec.gpu}[precision]
        if device == "tensorrt" and build and CATALOG[build].pixels:
            # TensorRT builds an engine for each input shape, and a pixels build's varies with the
            # photo: it runs the network inside, at its fixed size, the server scaling around it
            return CATALOG[build].sources[0].base
        return build
    return (spec.openvino or spec.name) if engine == "openvino" else spec.name


def _auto(spec: ModelSpec, engine: str, device: str, classes: tuple[str, ...], openvino: bool,
          on_gpu: bool) -> tuple[str, str]:
    """The fastest (engine, precision) for ``spec`` whose masks pass the quality guard and whose
    memory fits its tier, where ``engine`` is "auto" or fixed. On a GPU (``on_gpu``): ONNX
    Runtime, on the row's float16 build where it has one (no int8 weights widened at every run).
    On the CPU: the first of the row's ``prefer`` pairs this machine can run and is of the class
    for, else the row's own precision. int8 is taken only where the row lists it (its masks
    pass the quality guard against the truth); otherwise it is the operator's choice (the
    256 MB tier)."""
    if on_gpu:
        if engine in ("auto", "onnxruntime") and spec.gpu:
            return "onnxruntime", "float16"
        return ("onnxruntime" if engine == "auto" else engine), spec.precision or "float32"
    for candidate, precision, *needs in spec.prefer:
        if engine in ("auto", candidate) and all(need in classes for need in needs) \
                and _refusal(spec, candidate, precision, device, classes, openvino) is None:
            return candidate, precision
    return ("onnxruntime" if engine == "auto" else engine), spec.precision or "float32"


def _refusal(spec: ModelSpec, engine: str, precision: str, device: str, classes: tuple[str, ...],
             openvino: bool) -> str | None:
    """Why ``engine`` cannot run ``spec`` at ``precision`` on ``device`` here (None: it can)."""
    if engine == "openvino" and not openvino:
        return "BG_REMOVAL_ENGINE=openvino: the openvino package is not installed (pip install openvino)"
    if engine == "openvino" and device in ("cuda", "tensorrt"):
        return f"BG_REMOVAL_ENGINE=openvino runs on the CPU only, not BG_REMOVAL_DEVICE={device}"
    if engine == "onnxruntime" and CATALOG[_build(spec, engine, precision) or spec.name].filename.endswith(".xml"):
        return f"{spec.name} is an OpenVINO IR; ONNX Runtime cannot read it (BG_REMOVAL_ENGINE=openvino)"
    if spec.precision == "int8" and precision != "int8":
        return f"{spec.name} is an int8 graph; it runs at BG_REMOVAL_PRECISION=int8 (or auto) only"
    if spec.precision == "float16" and precision != "float16":
        return f"{spec.name} is a float16 graph; it runs at BG_REMOVAL_PRECISION=float16 (or auto) only"
    if precision in ("int8", "float16") and _build(spec, engine, precision) is None:
        return f"BG_REMOVAL_PRECISION={precision}: {spec.name} has no {precision} build"
    if precision == "float16" and engine == "openvino":
        return "BG_REMOVAL_PRECISION=float16: the float16 builds run on ONNX Runtime (BG_REMOVAL_ENGINE=onnxruntime)"
    if precision == "bfloat16" and engine == "onnxruntime":
        return "BG_REMOVAL_PRECISION=bfloat16: ONNX Runtime has no bf16 kernels on the CPU; use BG_REMOVAL_ENGINE=openvino"
    if precision == "bfloat16" and not has_bf16(classes):
        return (f"BG_REMOVAL_PRECISION=bfloat16 needs {' or '.join(BF16_CLASSES)} "
                f"(this CPU has {', '.join(classes) or 'no AVX2'})")
    return None


def choose(spec: ModelSpec, engine: str = "auto", precision: str = "auto", device: str = "auto",
           fallback: bool = False, classes: tuple[str, ...] | None = None, openvino: bool | None = None,
           gpu: bool | None = None) -> Choice:
    """The :class:`Choice` for serving ``spec`` with the requested engine (ENGINES), precision
    (PRECISIONS) and device (service/model/device.py's DEVICES), on a CPU with ``classes`` (default:
    this one's) where OpenVINO is or is not installed and the device asked for does or does not
    resolve to a GPU (``gpu``; default: as :func:`service.model.device.resolve` finds this host).

    Raises EngineUnavailable when the request cannot be met, and DeviceUnavailable when a GPU
    device asked for by name cannot run here, unless ``fallback``: then the automatic choice
    serves and ``reason`` (``device_reason``) says why.
    """
    from ..device import probe, resolve

    classes = cpu_classes() if classes is None else classes
    openvino = openvino_installed() if openvino is None else openvino
    if gpu is None:
        placed, device_reason = resolve(device, probe(), fallback)
    else:  # as told: a GPU asked for or taken by auto (CUDA), or the CPU
        placed, device_reason = (device if device in ("cuda", "tensorrt") else "cuda") if gpu and device != "cpu" \
            else "cpu", None
    on_gpu = placed != "cpu"
    if precision == "auto":
        suggested, precision = _auto(spec, engine, placed, classes, openvino, on_gpu)
        engine = suggested if engine == "auto" else engine
    if engine == "auto":  # a precision asked for: the engine that serves it best
        engine = "openvino" if precision == "bfloat16" else "onnxruntime"
    reason = _refusal(spec, engine, precision, placed, classes, openvino)
    if reason is None:
        return Choice(engine, precision, _build(spec, engine, precision, placed), None, placed, device_reason)
    if not fallback:
        raise EngineUnavailable(f"{reason}; or set BG_REMOVAL_FALLBACK=true to serve what this machine can")
    engine, precision = _auto(spec, "auto", placed, classes, openvino, on_gpu)
    return Choice(engine, precision, _build(spec, engine, precision, placed), reason, placed, device_reason)


def settings_choice(spec: ModelSpec, settings, device: str | None = None) -> Choice:
    """:func:`choose` with the settings' engine, precision, device (or ``device``) and fallback."""
    return choose(spec, settings.engine, settings.precision, device or settings.device, settings.fallback)


def compiled_cache_dir(settings) -> Path | None:
    """Where OpenVINO keeps compiled models between starts: MODEL_DIR/openvino-cache, made if
    missing; None where MODEL_DIR cannot be written (a read-only image): then each start compiles."""
    directory = Path(settings.model_dir) / "openvino-cache"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return directory if os.access(directory, os.W_OK) else None


def create_engine(spec: ModelSpec, choice: Choice, path: Path, settings, device: str | None = None) -> Engine:
    """The engine ``choice`` names for ``spec``, loaded from ``path`` (the build's file)."""
    build = CATALOG[choice.build]
    threads = settings.threads or auto_threads(choice.device, settings.workers)
    if choice.engine == "openvino":
        from .openvino_engine import OpenVinoEngine

        engine: Engine = OpenVinoEngine(spec, build, path, choice.precision, threads,
                                        compiled_cache_dir(settings))
    else:
        from .onnxruntime_engine import OnnxRuntimeEngine

        engine = OnnxRuntimeEngine(spec, path, threads, float_weights=settings.float_weights,
                                   device=device or settings.device, fallback=settings.fallback, build=build,
                                   precision=choice.precision)
    engine.choice_reason = choice.reason
    engine.device_reason = engine.device_reason or choice.device_reason
    return engine


def fetched_engine(spec: ModelSpec, settings, threads: int | None = None, show_progress: bool = True) -> Engine:
    """The engine for ``spec`` outside the server (CLI, bench, eval): chosen from the settings, its
    build fetched or verified in MODEL_DIR, with ``threads`` threads (default the settings')."""
    from dataclasses import replace

    from ..fetch import fetch_model

    if threads is not None:
        settings = replace(settings, threads=threads)
    choice = settings_choice(spec, settings)
    path = fetch_model(CATALOG[choice.build], settings.model_dir, settings.mirror, show_progress=show_progress)
    return create_engine(spec, choice, path, settings)
