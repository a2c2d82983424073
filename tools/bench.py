"""``python -m tools bench``: memory and speed of the real server under a mixed load.

For each model: start ``python app_isnet_tiny.py`` on a free loopback port,
time the cold start, then send the load (the sample photos, a 4000×3000
JPEG and a 1024² PNG, cycled; the last third of the requests three at a
time) while a sampler reads the RSS of the whole process tree every 20 ms.
Prints one table row per model. Nothing here is asserted: it is a
measurement, to be quoted with the machine it ran on.

With ``--rembg VENV`` the same images also go through rembg's in-process
``remove()`` (run by that venv's Python, with as many threads), and a second
table gives the time and peak-RSS ratios. rembg is never a dependency of the
service: it is only run from the venv given.

``--stages`` instead times each step of a request in one process (decode,
preprocess, session.run, postprocess, refinement, foreground estimate, PNG),
to show where the time outside the model goes; the process runs with the
server's malloc settings, which change what the numpy steps cost.
"""
from __future__ import annotations

import io
import math
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


def cpu_description() -> str:
    """"<model name>: <its classes>" of this machine's CPU (service/model/cpu.py)."""
    from service.model.cpu import cpu_classes, cpu_info, describe_classes

    return f"{cpu_info().get('model name', 'unknown CPU')}: {describe_classes(cpu_classes())}"


def configurations(models: list[str], engines: list[str], precisions: list[str], device: str = "auto"
                   ) -> list[tuple[str, str, str]]:
    """(model, engine, precision) for each combination this machine can run, in order, each
    resolved as the server resolves it (duplicates dropped); what it cannot run is printed."""
    from service.model.catalog import CATALOG
    from service.model.engines import EngineUnavailable, choose

    out = []
    for model in models:
        for engine in engines:
            for precision in precisions:
                try:
                    choice = choose(CATALOG[model], engine, precision, device)
                except EngineUnavailable as exc:
                    print(f"  skipped {model} engine={engine} precision={precision}: {str(exc).split(';')[0]}")
                    continue
                if (model, choice.engine, choice.precision) not in out:
                    out.append((model, choice.engine, choice.precision))
    return out


def engine_env(engine: str, precision: str) -> dict[str, str]:
    return {"BG_REMOVAL_ENGINE": engine, "BG_REMOVAL_PRECISION": precision}


def synthetic_payloads() -> list[tuple[str, bytes]]:
    """A 4000×3000 JPEG and a 1024² PNG of smooth noise (photos compress like this, not like flat colour)."""
    rng = np.random.default_rng(1)
    out = []
    for name, size, fmt in (("big.jpg", (4000, 3000), "JPEG"), ("square.png", (1024, 1024), "PNG")):
        small = rng.integers(0, 256, (size[1] // 50, size[0] // 50, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        image.save(buf, fmt, quality=90)
        out.append((name, buf.getvalue()))
    return out


def load_payloads(photos: Path | None) -> list[tuple[str, bytes]]:
    files = sorted(p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")) if photos else []
    return [(p.name, p.read_bytes()) for p in files] + synthetic_payloads()


def _pss_bytes(pid: int) -> int:
    """A process's proportional set size: its private pages, plus its share of each page it
    shares (a forked worker shares its master's imports); summed over a tree, each page once."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


class TreeSampler(threading.Thread):
    """Samples the summed RSS, and the summed PSS, of a process and its descendants until stopped.

    Summed RSS counts a page that the gunicorn master and its forked worker share once for each;
    summed PSS counts it once, split between them."""

    def __init__(self, pid: int, interval: float = 0.02):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval, self.peak, self.peak_pss, self._stop_event = interval, 0.0, 0.0, threading.Event()

    def current(self) -> float:
        return self._sample(pss=False)[0]

    def _sample(self, pss: bool = True) -> tuple[float, float]:
        """(summed RSS, summed PSS) in MB, from one walk of the tree; PSS 0 unless asked."""
        rss = proportional = 0
        for proc in [self.root, *self.root.children(recursive=True)]:
            try:
                rss += proc.memory_info().rss
                if pss:
                    proportional += _pss_bytes(proc.pid)
            except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError, PermissionError):
                pass
        return rss / MB, proportional / MB

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss, proportional = self._sample()
            self.peak, self.peak_pss = max(self.peak, rss), max(self.peak_pss, proportional)
            time.sleep(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BARE_RUN_CODE = """
import statistics, sys, time
from PIL import Image
from service.model.catalog import CATALOG
from service.config import Settings
from service.model.engines import fetched_engine
from service.model.engines.onnxruntime_engine import OnnxRuntimeEngine
import numpy as np
from service.imaging.network import preprocess
from service.memory import peak_rss_mb
model, threads, reuse, repeats, warmup = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
spec, settings = CATALOG[model], Settings.from_env()
if reuse == "server":  # the engine and precision the server would choose
    engine = fetched_engine(spec, settings, threads, show_progress=False)
else:  # ONNX Runtime's buffer reuse on or off (bench --compare-reuse)
    engine = OnnxRuntimeEngine(spec, settings.model_dir / spec.filename, threads, mem_reuse=reuse == "on",
                               float_weights=settings.float_weights)
photo = Image.new("RGB", (800, 600), (120, 90, 60))
x = np.asarray(photo)[None] if engine.build.pixels else preprocess(photo, spec)  # a pixels build scales inside
for _ in range(warmup):
    engine.run(x)
times = []
for _ in range(repeats):
    t = time.perf_counter(); engine.run(x); times.append(time.perf_counter() - t)
print(statistics.median(times), peak_rss_mb())
"""


def bare_runs(model: str, threads: int, reuse: bool | None, repeats: int, warmup: int,
              env: dict[str, str] | None = None) -> tuple[float, float]:
    """The model's run alone on one preprocessed photo, in a child process with the server's
    malloc settings and ``env``: (median s, peak RSS MB). ``reuse`` None: the engine the server
    would choose; True or False: ONNX Runtime with its buffer reuse on or off."""
    from service.memory import MALLOC_DEFAULTS

    args = [model, str(threads), "server" if reuse is None else "on" if reuse else "off", str(repeats), str(warmup)]
    out = subprocess.run([sys.executable, "-c", BARE_RUN_CODE, *args], cwd=ROOT,
                         env={**os.environ, **MALLOC_DEFAULTS, **(env or {})}, check=True, capture_output=True,
                         text=True)
    seconds, peak = map(float, out.stdout.split())
    return seconds, peak


def bare_run_seconds(model: str, threads: int, env: dict[str, str], repeats: int = 3) -> float:
    """Median time of a bare run with the server's engine (chosen from ``env``) and malloc
    settings, after one warm-up run: what the model alone costs inside the server."""
    return bare_runs(model, threads, None, repeats, 1, env)[0]


MATRIX_RUN_CODE = """
import statistics, sys, time
from dataclasses import replace
from pathlib import Path
from service.model.catalog import CATALOG
from service.config import Settings
from service.model.engines import fetched_engine
from service.imaging.decode import decode_upload
from service.memory import peak_rss_mb
model, threads, device, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
spec, settings = CATALOG[model], replace(Settings.from_env(), device=sys.argv[3])
engine = fetched_engine(spec, settings, threads, show_progress=False)
times = []
for photo in sys.argv[5:]:
    rgb = decode_upload(Path(photo).read_bytes(), settings.max_dimension, settings.max_pixels).rgb
    t = time.perf_counter(); mask = engine.predict_mask(rgb); times.append(time.perf_counter() - t)
    mask.save(out / (Path(photo).stem + ".png"))
print(statistics.median(times), peak_rss_mb(), engine.label, engine.runtime, sep="\t")
"""
# The float32 model each build is held against in the matrix.
MATRIX_REFERENCE = {"u2netp": "u2netp-rembg", "u2netp-rembg": "u2netp-rembg",
                    "isnet-general-tiny": "isnet-general-fp32", "isnet-general-int8": "isnet-general-fp32",
                    "isnet-general-fp32": "isnet-general-fp32"}


def matrix(models: list[str], photos: Path, thread_counts: list[int], engines: list[str] = ("auto",),
           precisions: list[str] = ("auto",)) -> int:
    """Every configuration (model × engine × precision × threads × device ONNX Runtime offers here)
    on the same photos, each in its own process with the server's malloc settings: median time
    of a mask (predict and postprocess), the process's peak, and agreement with the float32
    reference (ONNX Runtime, float32, on the CPU)."""
    import tempfile

    from service.model.device import probe
    from service.memory import MALLOC_DEFAULTS
    from .evaluate import iou

    files = [p for p in sorted(photos.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    devices = [d for d in ("cpu", "cuda", "tensorrt") if probe().usable(d)]
    print(f"{len(files)} photos from {photos}; devices {', '.join(devices)}; {cpu_description()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bg-matrix-") as work:
        def run(model: str, threads: int, device: str, env: dict[str, str]) -> tuple[float, float, str, str, Path]:
            out = Path(work) / f"{model}-{threads}-{device}-{env['BG_REMOVAL_ENGINE']}-{env['BG_REMOVAL_PRECISION']}"
            out.mkdir(exist_ok=True)
            result = subprocess.run([sys.executable, "-c", MATRIX_RUN_CODE, model, str(threads), device, str(out),
                                     *map(str, files)], cwd=ROOT, env={**os.environ, **MALLOC_DEFAULTS, **env},
                                    check=True, capture_output=True, text=True)
            seconds, peak, label, providers = result.stdout.strip().split("\t")
            return float(seconds), float(peak), label, providers, out

        references = {}
        for model, engine, precision in configurations(models, list(engines), list(precisions), "cpu"):
            reference = MATRIX_REFERENCE.get(model, model)
            if reference not in references:
                references[reference] = run(reference, max(thread_counts), "cpu",
                                            engine_env("onnxruntime", "float32"))[4]
            for device in (devices if engine == "onnxruntime" else ["cpu"]):
                for threads in thread_counts:  # on a GPU, the build the server runs there
                    env = engine_env(engine, precision if device == "cpu" else "auto")
                    seconds, peak, label, providers, out = run(model, threads, device, env)
                    scores = [iou(np.asarray(Image.open(out / f"{p.stem}.png")),
                                  np.asarray(Image.open(references[reference] / f"{p.stem}.png"))) for p in files]
                    rows.append((label, str(threads), device, providers.replace("ExecutionProvider", ""),
                                 f"{seconds:.2f}", f"{peak:.0f}", reference,
                                 f"{statistics.fmean(scores):.4f}", f"{min(scores):.4f}"))
    _table(("model (engine, precision)", "threads", "device", "providers", "median s a mask", "peak MB",
            "reference", "IoU vs reference, mean", "lowest"), rows)
    return 0


def compare_reuse(models: list[str], repeats: int = 5) -> int:
    """Bare runs with ONNX Runtime buffer reuse on and off, alternating processes; prints a table."""
    rows = []
    for model in models:
        results: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
        for _ in range(3):  # alternate, so that the machine's noise falls on both alike
            for reuse in ("on", "off"):
                results[reuse].append(bare_runs(model, 1, reuse == "on", repeats, warmup=0))
        for reuse, runs in results.items():
            rows.append((model, reuse, f"{statistics.median(r[0] for r in runs):.2f}",
                         f"{statistics.median(r[1] for r in runs):.0f}"))
    _table(("model", "reuse", "median run s", "peak RSS MB"), rows)
    return 0


def stages(models: list[str], photos: Path | None, threads: int, engines: list[str] = ("auto",),
           precisions: list[str] = ("auto",)) -> int:
    """Where a request's time goes, in process: median ms per step over the bench's images, and the
    median per request of the time outside the model (refinement, being opt-in, left out)."""
    from dataclasses import replace

    from service.model.catalog import CATALOG
    from service.config import Settings
    from service.model.engines import fetched_engine
    from service.imaging.compose import cutout, encode
    from service.imaging.decode import decode_upload
    from service.imaging.network import postprocess, preprocess
    from service.imaging.matting import estimate_foreground, refine_mask
    from service.memory import MALLOC_DEFAULTS

    payloads = load_payloads(photos)
    settings = Settings.from_env()
    steps = ("decode", "preprocess", "session.run", "postprocess", "refine (opt-in)", "foreground", "PNG")
    malloc = " ".join(f"{name}={os.environ.get(name, '(unset)')}" for name in MALLOC_DEFAULTS)
    print(f"{len(payloads)} images, {threads} thread(s), in one process, {malloc}; {cpu_description()}; "
          "median ms per step")
    rows = []
    for model, engine_name, precision in configurations(models, list(engines), list(precisions)):
        spec = CATALOG[model]
        engine = fetched_engine(spec, replace(settings, engine=engine_name, precision=precision), threads)
        times: dict[str, list[float]] = {step: [] for step in steps}

        def timed(step, fn, *args):
            started = time.perf_counter()
            result = fn(*args)
            times[step].append(time.perf_counter() - started)
            return result

        for _, data in payloads:
            rgb = timed("decode", decode_upload, data, settings.max_dimension, settings.max_pixels).rgb
            if engine.build.pixels:  # scaled and normalised inside the graph: all of it is the run
                mask = Image.fromarray(timed("session.run", engine.run, np.asarray(rgb)[None]), "L")
                times["preprocess"].append(0.0)
                times["postprocess"].append(0.0)
            else:
                batch = timed("preprocess", preprocess, rgb, spec)
                mask = timed("postprocess", postprocess, timed("session.run", engine.run, batch), rgb.size,
                             spec.activation)
            timed("refine (opt-in)", refine_mask, rgb, mask, spec.input_size)
            subject = timed("foreground", estimate_foreground, rgb, mask)
            timed("PNG", encode, cutout(subject, mask), "png")
        medians = {step: statistics.median(t) * 1000 for step, t in times.items()}
        # per request, then the median: steps grow together with the image, so a sum of
        # per-step medians would understate a typical request
        outside = [sum(times[step][i] for step in steps if step not in ("session.run", "refine (opt-in)"))
                   for i in range(len(payloads))]
        ratios = [o / run for o, run in zip(outside, times["session.run"])]
        rows.append((engine.label, *(f"{medians[step]:.0f}" for step in steps),
                     f"{statistics.median(outside) * 1000:.0f}", f"{statistics.median(ratios):.2f}"))
    _table(("model", *steps, "outside the model", "outside / run"), rows)
    return 0


START_TIMEOUT = 120  # seconds for a server to become healthy


def bench_model(model: str, payloads, total: int, concurrency: int, threads: int, log: Path,
                refine: bool = False, memory_limit: int | None = None, size: str = "default",
                extra_env: dict[str, str] | None = None) -> dict:
    """One server's run of the load, with ``extra_env`` (the engine and precision) in its
    environment; with ``memory_limit`` (MiB) the server runs in a memory cgroup of that size, as
    a container host runs it, and its OOM kills are counted."""
    from .cgroup import MemoryCgroup

    cgroup = MemoryCgroup(memory_limit) if memory_limit else None
    port = _free_port()
    env = dict(os.environ, BG_REMOVAL_MODEL=model, PORT=str(port), HOST="127.0.0.1",
               BG_REMOVAL_THREADS=str(threads), **(extra_env or {}))
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "app_isnet_tiny.py"], cwd=ROOT, env=env,
                                   stdout=out, stderr=subprocess.STDOUT,
                                   preexec_fn=cgroup.enter if cgroup else None)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{model}: the server exited at start ({_oom_note(cgroup)}); see {log}")
            if time.perf_counter() - started > START_TIMEOUT:
                raise RuntimeError(f"{model}: the server was not healthy after {START_TIMEOUT} s "
                                   f"({_oom_note(cgroup)}); see {log}")
            try:
                if requests.get(url + "/api/bg/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.05)
        cold_start = time.perf_counter() - started
        sampler = TreeSampler(process.pid)
        rss_start = sampler.current()
        sampler.start()

        times, statuses = [], []

        def send(i: int) -> None:
            name, data = payloads[i % len(payloads)]
            t = time.perf_counter()
            try:
                status = requests.post(url + "/api/bg/remove", files={"file": (name, data)},
                                       data={"size": size, **({"refine": "true"} if refine else {})},
                                       timeout=600).status_code
            except requests.ConnectionError:  # the server is gone (killed for memory, in a cgroup)
                status = 0
            times.append(time.perf_counter() - t)
            statuses.append(status)

        sequential = total - total // 3
        rss_20 = None
        for i in range(sequential):
            send(i)
            if i + 1 == min(20, sequential):
                rss_20 = sampler.current()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(send, range(sequential, total)))
        rss_end = sampler.current()
        sampler.stop()
        if process.poll() is not None:
            raise RuntimeError(f"{model}: the server died under the load ({_oom_note(cgroup)}); see {log}")
        status = requests.get(url + "/api/bg/status", timeout=5).json()
        cleared = requests.post(url + "/api/bg/clear_cache", timeout=30).json()
        rss_cleared = TreeSampler(process.pid).current()
    finally:
        process.terminate()
        process.wait(30)
        if cgroup:
            oom_kills, cgroup_peak = cgroup.oom_kills(), cgroup.peak_mb()
            cgroup.remove()
    ok = [t for t, s in zip(times, statuses) if s == 200]
    # Requests sent one at a time never wait for a turn: their times are the service's own.
    alone = [t for t, s in zip(times[:sequential], statuses[:sequential]) if s == 200]
    return {
        "model": model, "label": status["model_used"], "threads": threads, "cold_start_s": cold_start,
        "rss_start": rss_start, "rss_20": rss_20, "rss_end": rss_end, "rss_cleared": rss_cleared,
        "peak_tree": sampler.peak, "peak_tree_pss": sampler.peak_pss, "peak_worker": status["memory"]["peak_rss_mb"],
        "ok": len(ok), "total": total, "busy": statuses.count(503),
        # NaN where nothing succeeded (a server killed for memory over and over, in a cgroup)
        "p50": _median(ok), "p95": float(np.percentile(ok, 95)) if ok else math.nan, "p50_alone": _median(alone),
        "freed": cleared["freed_mb"],
        **({"oom_kills": oom_kills, "cgroup_peak": cgroup_peak} if cgroup else {}),
    }


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _oom_note(cgroup) -> str:
    return f"{cgroup.oom_kills()} OOM kill(s) in its {cgroup.limit_mb} MB cgroup" if cgroup else "no cgroup"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main(models: list[str], photos: Path | None, total: int, concurrency: int, threads: int,
         rembg: Path | None = None, rembg_home: Path | None = None, refine: bool = False,
         memory_limit: int | None = None, size: str = "default", engines: list[str] = ("auto",),
         precisions: list[str] = ("auto",)) -> int:
    from service.config import Settings
    from .cgroup import CgroupUnavailable, MemoryCgroup
    from .versus import REMBG_MODEL, prepare_rembg_home, rembg_timing

    if memory_limit:
        try:
            MemoryCgroup(memory_limit).remove()
        except CgroupUnavailable as exc:
            print(f"--memory-limit: {exc}; nothing measured", file=sys.stderr)
            return 1

    print(f"CPU: {cpu_description()}; {os.cpu_count()} CPUs", flush=True)
    payloads = load_payloads(photos)
    settings = Settings.from_env()
    weights = "float32" if settings.float_weights else "int8"
    print(f"load: {total} requests cycling {len(payloads)} images, the last {total // 3} "
          f"{concurrency} at a time, size={size}; {threads} inference thread(s); BG_REMOVAL_WEIGHTS={weights}",
          flush=True)
    runs_for = configurations(models, list(engines), list(precisions))
    if rembg:
        rembg_home = prepare_rembg_home(rembg_home, settings.model_dir, settings.mirror)
    header = ("model", "cold start s", "RSS start MB", "RSS @20 MB", "RSS @end MB", "after clear MB",
              "peak tree MB", "peak tree PSS MB", "peak worker MB", "ok/total", "p50 alone s", "p50 s", "p95 s", "bare run s",
              "alone/bare") + ((f"OOM kills ({memory_limit} MB cgroup)", "cgroup peak MB") if memory_limit else ())
    rows, versus, rembg_runs, failures = [], [], {}, []
    for model, engine, precision in runs_for:
        env, name = engine_env(engine, precision), f"{model}-{engine}-{precision}"
        try:
            r = bench_model(model, payloads, total, concurrency, threads, Path(f"/tmp/bench-{name}.log"),
                            memory_limit=memory_limit, size=size, extra_env=env)
        except RuntimeError as exc:  # refused at start, or killed for memory: said, and the next one runs
            last = Path(f"/tmp/bench-{name}.log").read_text().strip().splitlines()[-1:] or [""]
            failures.append(f"{model} ({engine}, {precision}): {exc} [{last[0][-160:]}]")
            print(f"  {failures[-1]}", flush=True)
            continue
        bare = bare_run_seconds(model, threads, env)
        runs = [(r["label"], r)]
        if refine:  # the same load again with refine=true, on a fresh server
            runs.append((f"{r['label']} refine", bench_model(model, payloads, total, concurrency, threads,
                                                               Path(f"/tmp/bench-{name}-refine.log"), refine=True,
                                                               memory_limit=memory_limit, size=size, extra_env=env)))
        for label, run in runs:
            rows.append((label, f"{run['cold_start_s']:.2f}", f"{run['rss_start']:.0f}", f"{run['rss_20']:.0f}",
                         f"{run['rss_end']:.0f}", f"{run['rss_cleared']:.0f}", f"{run['peak_tree']:.0f}",
                         f"{run['peak_tree_pss']:.0f}", f"{run['peak_worker']:.0f}", f"{run['ok']}/{run['total']}", f"{run['p50_alone']:.2f}",
                         f"{run['p50']:.2f}", f"{run['p95']:.2f}", f"{bare:.2f}", f"{run['p50_alone'] / bare:.2f}")
                        + ((str(run["oom_kills"]), f"{run['cgroup_peak'] or 0:.0f}") if memory_limit else ()))
        if rembg:
            if model not in rembg_runs:  # once per model: its figures are the same for every engine of ours
                rembg_runs[model] = rembg_timing(rembg, rembg_home, model, payloads, threads)
            seconds, peak = rembg_runs[model]
            versus.append((r["label"], REMBG_MODEL[model], f"{r['p50_alone']:.2f}", f"{seconds:.2f}",
                           f"{r['p50_alone'] / seconds:.2f}", f"{r['peak_tree']:.0f}", f"{peak:.0f}",
                           f"{r['peak_tree'] / peak:.2f}"))
        print(f"  {r['label']} done", flush=True)
    _table(header, rows)
    if versus:
        print(f"\nrembg ({rembg}), remove() in process on the same {len(payloads)} images, {threads} thread(s):")
        _table(("model", "rembg session", "ours p50 alone s", "rembg median s", "time ratio",
                "ours peak tree MB", "rembg peak MB", "peak ratio"), versus)
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if failures else 0
