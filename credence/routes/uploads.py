"""Receiving an uploaded clip: streamed to a temporary file in chunks, never held whole in memory.

Accepts `multipart/form-data` (the first part that carries a file, normally field `file`) or a
raw body (`video/*`, `application/octet-stream`), as the C2PA soft-binding API's byContent
sends it. The size limit is enforced while reading, so a 2 GB upload costs at most the limit
in disk and is refused with 413 as soon as it passes it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import HTTPException, Request
from python_multipart.multipart import MultipartParser, parse_options_header

from provenance.errors import ProvenanceError

#: Suffixes kept from the client's file name (readers sniff content anyway; this helps them).
_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".webm", ".mkv"}


#: After refusing an upload, read (and drop) at most this much more of it, so that an ordinary
#: client sees the 413 instead of a connection reset; past it the connection is simply closed.
DRAIN_BYTES = 64 * 1024 * 1024


def as_http_error(exc: ProvenanceError) -> HTTPException:
    """A user's bad file as an HTTPException with the app's status for its type.

    Raised as HTTPException rather than left to the app's catch-all handler: Starlette answers
    those from its outermost middleware, then re-raises, which logs a traceback for a 4xx and
    drops the client's keep-alive connection.
    """
    from ..app import status_for

    return HTTPException(status_for(exc) or 422, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"the upload is larger than the {limit} byte limit (CREDENCE_MAX_UPLOAD_BYTES)")


async def _drain(request: Request, budget: int = DRAIN_BYTES) -> None:
    """Discard the rest of the body, up to `budget` bytes."""
    seen = 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > budget:
                return
    except Exception:  # the client went away: nothing left to drain
        return


class _FilePart:
    """Callbacks for python-multipart: write the first file part's bytes to `handle`."""

    def __init__(self, handle: object, limit: int) -> None:
        self.handle = handle
        self.limit = limit
        self.size = 0
        self.filename: str | None = None
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._state = "before"  # before -> in_file -> done

    def callbacks(self) -> dict[str, object]:
        return {"on_part_begin": self._part_begin, "on_header_field": self._field,
                "on_header_value": self._value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_done, "on_part_data": self._data,
                "on_part_end": self._part_end}

    def _part_begin(self) -> None:
        self._headers = {}

    def _field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field, self._header_value = b"", b""

    def _headers_done(self) -> None:
        if self._state != "before":
            return
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        if b"filename" in params:
            self.filename = params[b"filename"].decode("utf-8", "replace")
            self._state = "in_file"

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._state != "in_file":
            return
        self.size += end - start
        if self.size <= self.limit:  # past it the caller drains the body and answers 413
            self.handle.write(data[start:end])  # type: ignore[attr-defined]

    def _part_end(self) -> None:
        if self._state == "in_file":
            self._state = "done"


@asynccontextmanager
async def receive_upload(request: Request, max_bytes: int) -> AsyncIterator[tuple[Path, str | None, int]]:
    """Stream the request's clip to a temporary file; yields (path, client file name, size).

    The file is deleted when the block ends, whatever happens in it.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes + 64 * 1024:
        await _drain(request)
        raise _too_large(max_bytes)
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    fd, name = tempfile.mkstemp(prefix="credence-upload-")
    path = Path(name)
    try:
        filename, size = await _receive(request, fd, content_type, params, max_bytes)
        suffix = Path(filename or "").suffix.lower()
        if suffix in _SUFFIXES:
            named = path.with_name(path.name + suffix)
            path.rename(named)
            path = named
        yield path, filename, size
    finally:
        path.unlink(missing_ok=True)


async def _receive(request: Request, fd: int, content_type: bytes, params: dict[bytes, bytes],
                   max_bytes: int) -> tuple[str | None, int]:
    """Write the clip's bytes to `fd`; past the limit, drain (and drop) the rest, then 413."""
    with os.fdopen(fd, "wb") as handle:
        if content_type == b"multipart/form-data":
            boundary = params.get(b"boundary")
            if not boundary:
                raise HTTPException(400, "multipart/form-data without a boundary")
            part = _FilePart(handle, max_bytes)
            parser = MultipartParser(boundary, part.callbacks())  # type: ignore[arg-type]
            seen = 0
            async for chunk in request.stream():
                seen += len(chunk)
                if part.size <= max_bytes:
                    parser.write(chunk)
                elif seen > max_bytes + DRAIN_BYTES:
                    break
            if part.size > max_bytes:
                raise _too_large(max_bytes)
            parser.finalize()
            if part.filename is None:
                raise HTTPException(422, "the form has no file part (send the clip as field `file`)")
            return part.filename, part.size
        if content_type.startswith(b"video/") or content_type in (b"application/octet-stream", b""):
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size <= max_bytes:
                    handle.write(chunk)
                elif size > max_bytes + DRAIN_BYTES:
                    break
            if size > max_bytes:
                raise _too_large(max_bytes)
            return None, size
        raise HTTPException(415, f"unsupported content type {content_type.decode(errors='replace')!r}: "
                                 "send multipart/form-data with a `file` part, or the video bytes")
