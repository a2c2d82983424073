"""rembg, run from a separate venv, for side-by-side figures (``bench --rembg``, ``eval --rembg``).

rembg is never a dependency of the service: its venv's own Python runs a short
program, and only file paths and numbers cross over. Both sides run the same
weights: ``prepare_rembg_home`` puts them where rembg looks (its U2NET_HOME).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

# The rembg session that runs the same weights as each of our models.
REMBG_MODEL = {"u2netp": "u2netp", "isnet-general-tiny": "isnet-general-use", "isnet-general-int8": "isnet-general-use",
               "isnet-general-fp32": "isnet-general-use"}

_TIMING_CODE = """
import resource, statistics, sys, time
from rembg import new_session, remove
session = new_session(sys.argv[1])
times = []
for path in sys.argv[2:]:
    data = open(path, "rb").read()
    t = time.perf_counter(); remove(data, session=session); times.append(time.perf_counter() - t)
print(statistics.median(times), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

_MASK_CODE = """
import sys
from PIL import Image
from rembg import new_session, remove
session, matting = new_session(sys.argv[1]), sys.argv[2] == "alpha-matting"
for source, target in zip(sys.argv[3::2], sys.argv[4::2]):
    with Image.open(source) as image:
        image = image.convert("RGB")
        if matting:
            mask = remove(image, session=session, alpha_matting=True).getchannel("A")
        else:
            mask = remove(image, session=session, only_mask=True)
        mask.save(target)
"""


def prepare_rembg_home(home: Path | None, model_dir: Path, mirror: Path | None) -> Path:
    """Put the files rembg loads for REMBG_MODEL's sessions into ``home`` (its U2NET_HOME;
    None: $U2NET_HOME or ~/.u2net, as rembg itself) and return that folder.

    u2netp is rembg's own file (our u2netp is built from it, weights unchanged). isnet-general-use is
    rebuilt in float32 from the fp16 IS-Net that isnet-general-tiny comes from, so
    both sides run the same weights; its bytes differ from rembg's release file,
    which is why rembg runs with MODEL_CHECKSUM_DISABLED.
    """
    from service.model.catalog import CATALOG
    from service.model.fetch import fetch_model
    from .quantize import build_float32_model

    home = home or Path(os.environ.get("U2NET_HOME") or Path.home() / ".u2net")
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "u2netp.onnx").exists():
        (home / "u2netp.onnx").write_bytes(fetch_model(CATALOG["u2netp-rembg"], model_dir, mirror).read_bytes())
    if not (home / "isnet-general-use.onnx").exists():
        fp16 = fetch_model(CATALOG["isnet-general-use-fp16"], model_dir, mirror)
        build_float32_model(fp16, home / "isnet-general-use.onnx")
    return home


def _run(venv: Path, home: Path, code: str, args: list[str], threads: int, cwd: str) -> str:
    env = dict(os.environ, U2NET_HOME=str(home), MODEL_CHECKSUM_DISABLED="1", OMP_NUM_THREADS=str(threads))
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code, *args],
                          env=env, capture_output=True, text=True, cwd=cwd)
    if done.returncode != 0:
        raise RuntimeError(f"rembg from {venv} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


def library_timing(model: str, payloads, threads: int, env: dict[str, str] | None = None) -> tuple[float, float]:
    """The same program as rembg's timing with its import line changed to this service's
    (``from service import new_session, remove``), run by this Python: (median s, peak RSS MB)."""
    root = Path(__file__).resolve().parents[1]
    code = _TIMING_CODE.replace("from rembg import new_session, remove", "from service import new_session, remove")
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i, (name, data) in enumerate(payloads):
            paths.append(Path(folder) / f"{i}-{name}")
            paths[-1].write_bytes(data)
        path = os.pathsep.join(filter(None, (str(root), os.environ.get("PYTHONPATH"))))
        done = subprocess.run([sys.executable, "-c", code, REMBG_MODEL[model], *map(str, paths)], cwd=folder,
                              env={**os.environ, **(env or {}), "PYTHONPATH": path, "BG_REMOVAL_THREADS": str(threads)},
                              capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"remove() failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    seconds, peak = map(float, done.stdout.split()[-2:])
    return seconds, peak


def rembg_timing(venv: Path, home: Path, model: str, payloads, threads: int) -> tuple[float, float]:
    """rembg's ``remove()`` on each (name, bytes) payload in one process: (median s, peak RSS MB)."""
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i, (name, data) in enumerate(payloads):
            paths.append(Path(folder) / f"{i}-{name}")
            paths[-1].write_bytes(data)
        out = _run(venv, home, _TIMING_CODE, [REMBG_MODEL[model], *map(str, paths)], threads, folder)
    seconds, peak = map(float, out.split()[-2:])
    return seconds, peak


def rembg_masks(venv: Path, home: Path, model: str, images: list[Path], folder: Path, threads: int,
                alpha_matting: bool = False) -> list[Path]:
    """rembg's mask (``only_mask=True``) for each image, written into ``folder``; their paths, in order.

    With ``alpha_matting`` the mask is instead the alpha of rembg's ``alpha_matting=True`` cut-out
    (its own edge refinement: pymatting's closed-form matting on a trimap from the mask).
    """
    targets = [folder / f"{i}.png" for i in range(len(images))]
    pairs = [str(p.resolve()) for pair in zip(images, targets) for p in pair]
    mode = "alpha-matting" if alpha_matting else "mask"
    _run(venv, home, _MASK_CODE, [REMBG_MODEL[model], mode, *pairs], threads, str(folder))
    return targets
