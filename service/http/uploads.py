"""Reading an upload: the file's bytes within MAX_FILE_SIZE_MB, a form's fields, the first bytes of
a multipart file screened before the rest is read, and an oversized body drained before its 413."""
from __future__ import annotations

from pathlib import PurePosixPath

from flask import request
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, File, MultipartDecoder, NeedData

from ..errors import FileTooLarge, MissingFile
from ..imaging.decode import check_header
from .state import current_settings


def read_file(upload, field: str) -> bytes:
    """An uploaded file's bytes, at most MAX_FILE_SIZE_MB (413 beyond), not empty (400)."""
    data = upload.stream.read(current_settings().max_file_size + 1)
    if len(data) > current_settings().max_file_size:
        raise FileTooLarge(f"upload is larger than {current_settings().max_file_size_mb} MB")
    if not data:
        raise MissingFile(f"the uploaded {field} is empty")
    return data


def uploaded_file() -> tuple[bytes, str]:
    """The ``file`` field's bytes and a safe stem for the download name."""
    upload = request.files.get("file")
    if upload is None:
        raise MissingFile("no file: send the image as multipart form field 'file'")
    return read_file(upload, "file"), safe_stem(upload.filename)


def safe_stem(filename: str | None) -> str:
    """A file name's stem fit for a download name. The name is only echoed back (in
    Content-Disposition, or as a batch's entry name), never used as a path; HTTP headers are
    Latin-1: anything but ASCII letters, digits and -_. is dropped."""
    stem = PurePosixPath((filename or "image").replace("\\", "/")).stem
    return "".join(c for c in stem if c.isascii() and (c.isalnum() or c in "-_."))[:100] or "image"


def form_field(name: str) -> str | None:
    """A request option, from the multipart form or else the query string."""
    return request.form.get(name) or request.args.get(name)


# What a refused upload may have read of it to settle its type and declared size: headers sit
# in the first bytes of every allowed format (a JPEG's may follow up to 64 KB of EXIF).
SCREEN_BYTES = 256 * 1024


def screen_upload(field: str) -> None:
    """Raise the 4xx the first SCREEN_BYTES of the multipart file ``field`` settle, if any
    (:func:`service.imaging.decode.check_header`): read from the body as it streams, the rest left
    unread. For a request about to be refused as busy, which is then refused for what it is."""
    mimetype, options = parse_options_header(request.headers.get("Content-Type", ""))
    if mimetype != "multipart/form-data" or not options.get("boundary"):
        return
    decoder, stream = MultipartDecoder(options["boundary"].encode("latin-1")), request.stream
    head, inside, complete = bytearray(), False, False
    while not complete and len(head) < SCREEN_BYTES:
        chunk = stream.read(64 * 1024)
        decoder.receive_data(chunk or None)
        try:
            event = decoder.next_event()
            while not isinstance(event, (NeedData, Epilogue)) and not complete:
                if isinstance(event, File):
                    inside = event.name == field
                elif isinstance(event, Data) and inside:
                    head += event.data
                    complete = not event.more_data
                event = decoder.next_event()
        except ValueError:  # a malformed body: the refusal stands
            return
        if not chunk or isinstance(event, Epilogue):
            break
    if head:
        settings = current_settings()
        check_header(bytes(head[:SCREEN_BYTES]), complete and len(head) <= SCREEN_BYTES, settings.max_pixels)


# An oversized body up to this size is read and dropped before the 413 goes out: a client
# still sending when the server closes gets a broken pipe instead of the answer (Python's
# urllib, browsers' fetch). A larger one is answered at once and the connection closed.
DRAIN_LIMIT = 64 * 1024 * 1024


def drain_body() -> None:
    """Read and drop what is left of this request's declared body, up to DRAIN_LIMIT bytes."""
    length = request.content_length
    if not length or length > DRAIN_LIMIT:
        return
    stream = request.environ["wsgi.input"]
    while length > 0:
        chunk = stream.read(min(length, 1 << 16))
        if not chunk:
            break
        length -= len(chunk)
