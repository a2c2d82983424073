"""``POST /api/bg/batch``: several images in one request (repeated ``file`` fields, or zips of
them), answered as one zip streamed in input order, with a ``manifest.json`` last.

The request is admitted once, its bytes counted as waiting uploads (MAX_BATCH_MB at most, inside
MAX_WAITING_MB's budget); then each image takes its own turn at the admission gate, so single
requests interleave with a long batch, and its bytes stop counting as it starts. A file that
fails (not an image, too large) is reported in the manifest and the rest go on. The answer
streams: each image's result goes out as soon as it is made and is dropped, so memory is the
upload plus one image at work, whatever the count.

The upload is read whole before the answer starts: most HTTP clients send the whole body before
they read a byte of the answer, so an answer streamed while the body still arrives would fill
both socket buffers and stall. Beyond what one request should carry, jobs are the way.
"""
from __future__ import annotations

import io
import json
import logging
import time
import zipfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Callable, Iterator

from flask import Blueprint, Response, request, stream_with_context

from ..errors import BadRequest, FileTooLarge, MissingFile, ServiceError, memory_exhausted
from ..pipeline import Options
from .params import BATCH
from .state import admission_gate, current_settings, require_api_key
from .uploads import drain_body, read_file, safe_stem
from .web import form_options, request_deadline, run_pipeline

log = logging.getLogger(__name__)
bp = Blueprint("batch", __name__, url_prefix="/api/bg")
bp.before_request(require_api_key)

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


class BadZip(ServiceError):
    status, code = 400, "bad_zip"


class TooManyFiles(ServiceError):
    status, code = 413, "too_many_files"


@dataclass
class Item:
    """One image of the batch: its name as sent, and how to get its bytes (read on its turn)."""
    name: str
    size: int                     # bytes it holds of the upload (counted as waiting until its turn)
    read: Callable[[], bytes]     # its bytes; raises the ServiceError that makes it fail
    error: ServiceError | None = None  # failed before its turn (too large, empty)


def _zip_items(data: bytes, archive: str, max_file_size: int) -> list[Item]:
    """The images in a zip, in its order; directories and macOS' and hidden files skipped. An
    entry that would expand beyond MAX_FILE_SIZE_MB refuses the whole batch (a zip bomb)."""
    try:
        archive_file = zipfile.ZipFile(io.BytesIO(data))
        entries = archive_file.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise BadZip(f"{archive} is not a zip that can be read ({exc})") from None
    items = []
    for info in entries:
        path = PurePosixPath(info.filename)
        if info.is_dir() or path.parts[:1] == ("__MACOSX",) or path.name.startswith("."):
            continue
        if info.file_size > max_file_size:
            raise FileTooLarge(f"{archive}: {info.filename} expands to {info.file_size / 2**20:.0f} MB; "
                               f"each image may be {max_file_size // 2**20} MB")

        def read(info=info) -> bytes:
            if info.flag_bits & 0x1:
                raise BadRequest(f"{info.filename} is encrypted")
            try:
                with archive_file.open(info) as entry:
                    return entry.read(max_file_size + 1)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
                raise BadZip(f"{archive}: {info.filename} cannot be read from the zip ({exc})") from None
        items.append(Item(f"{archive}/{info.filename}", info.compress_size, read))
    return items


def request_items(max_files: int) -> list[Item]:
    """Every image of the request, in order: each ``file`` field, a zip expanded in place."""
    settings = current_settings()
    uploads = request.files.getlist("file")
    if not uploads:
        raise MissingFile("no files: send the images as multipart fields 'file' (repeated), or a zip of them")
    items: list[Item] = []
    for upload in uploads:
        name = (upload.filename or "image").replace("\\", "/")
        try:
            data = read_file(upload, "file")
            upload.stream.close()  # its buffer goes: the bytes are held once
        except (FileTooLarge, MissingFile) as exc:
            items.append(Item(name, 0, lambda: b"", exc))
            continue
        if data.startswith(_ZIP_MAGIC):
            items += _zip_items(data, name, settings.max_file_size)
        else:
            items.append(Item(name, len(data), lambda data=data: data))
        if len(items) > max_files:
            raise TooManyFiles(f"the batch holds more than {max_files} images (MAX_BATCH_FILES)")
    return items


class _Sink(io.RawIOBase):
    """Where the zip writer puts its bytes until the answer's generator takes them."""

    def __init__(self):
        super().__init__()
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


def _unique(name: str, taken: set[str]) -> str:
    stem, dot, extension = name.rpartition(".")
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{stem}-{n}{dot}{extension}"
    taken.add(candidate)
    return candidate


def _answers(items: list[Item], options: Options, turn) -> Iterator[bytes]:
    """The zip, entry by entry: each image run on its own turn, then the manifest."""
    sink, taken, manifest = _Sink(), set(), []
    stamp = time.localtime()[:6]
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:
        for index, item in enumerate(items):
            entry = {"index": index, "input": item.name}
            try:
                if item.error:
                    raise item.error
                with turn(done=item.size, until=time.monotonic() + current_settings().request_timeout):
                    data = item.read()
                    if len(data) > current_settings().max_file_size:
                        raise FileTooLarge(f"{item.name} is larger than {current_settings().max_file_size_mb} MB")
                    try:
                        result = run_pipeline(data, options, request_deadline())
                    except MemoryError as exc:
                        raise memory_exhausted(exc) from None
                    del data
                output = output_name(item.name, options, taken)
                archive.writestr(zipfile.ZipInfo(output, stamp), result.body)
                entry.update(status=200, output=output, bytes=len(result.body), width=result.image.width,
                             height=result.image.height, confidence=round(result.confidence, 3),
                             model=result.model, **({"warning": result.warning} if result.warning else {}))
                del result
            except ServiceError as exc:
                entry.update(status=exc.status, code=exc.code, error=exc.message)
            except Exception:  # a bug; the rest of the batch still goes
                log.exception("batch image %d failed", index)
                entry.update(status=500, code=ServiceError.code, error="internal error; this image was not processed")
            manifest.append(entry)
            yield sink.take()
        done = sum(1 for e in manifest if e["status"] == 200)
        summary = {"images": len(manifest), "succeeded": done, "failed": len(manifest) - done, "files": manifest}
        archive.writestr(zipfile.ZipInfo("manifest.json", stamp), json.dumps(summary, indent=1),
                         compress_type=zipfile.ZIP_DEFLATED)
    yield sink.take()


def request_options(api: str = BATCH) -> Options:
    """The options of a batch or a job (``api``): those of /api/bg/remove, for every image."""
    return form_options(api)


def output_prefix(options: Options) -> str:
    return "mask" if options.only_mask else "nobg"


def output_name(item_name: str, options: Options, taken: set[str]) -> str:
    """The answer's name for an image: ``nobg_<stem>.png`` (``-2``, ``-3`` … where taken)."""
    return _unique(f"{output_prefix(options)}_{safe_stem(item_name)}.{options.fmt}", taken)


@bp.post("/batch")
def batch():
    settings = current_settings()
    size = request.content_length or 0
    if size > settings.max_batch:
        drain_body()  # so that the client, still sending, reads the answer
        raise FileTooLarge(f"a batch may be {settings.max_batch // 2**20} MB (MAX_BATCH_MB); send fewer images "
                           f"per request, or use jobs")
    request.max_content_length = settings.max_batch + 64 * 1024
    request.max_form_parts = settings.max_batch_files + 100
    stack = ExitStack()
    turn = stack.enter_context(admission_gate().admit(size, request_deadline()))  # 503 before any byte of the answer
    try:
        items = request_items(settings.max_batch_files)
        options = request_options()
    except BaseException:
        stack.close()
        raise

    def generate() -> Iterator[bytes]:
        # The admission ends before the last chunk goes out: once the client has the whole
        # answer, the gate no longer counts this batch.
        last = b""
        with stack:
            for chunk in _answers(items, options, turn):
                yield last
                last = chunk
        yield last

    response = Response(stream_with_context(generate()), mimetype="application/zip")
    response.headers["Content-Disposition"] = 'attachment; filename="batch.zip"'
    response.headers["X-Batch-Images"] = str(len(items))
    return response
