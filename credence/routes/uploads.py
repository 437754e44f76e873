"""Receiving an uploaded clip: streamed to a temporary file in chunks, never held whole in memory.

Accepts `multipart/form-data` (the first part that carries a file, normally field `file`) or a
raw body (`video/*`, `application/octet-stream`), as the C2PA soft-binding API's byContent
sends it. Every byte of the body counts toward the limit while it streams, chunked or not: the
file part may hold `max_bytes`, and the multipart envelope with any other fields at most
`ENVELOPE_BYTES` more, so a small file part beside an endless text field is refused with 413 as
soon as the body passes the limit. A body that does not parse as multipart is 400, never 500;
one that stops arriving is answered by the app's body timeout (408).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from ..deps import Busy, Gate, Ticket

#: Suffixes kept from the client's file name (readers sniff content anyway; this helps them).
_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".webm", ".mkv"}

#: Room for the multipart envelope (boundaries, part headers) and small extra fields.
ENVELOPE_BYTES = 64 * 1024

#: After refusing an upload, read (and drop) at most this much more of it, so that an ordinary
#: client still sending its body sees the 413 instead of a connection reset; past it the
#: connection is closed.
DRAIN_BYTES = 8 * 1024 * 1024

#: RFC 2046: a boundary is 1 to 70 characters from this set, not ending in a space.
_BOUNDARY = re.compile(rb"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"the upload is larger than the {limit} byte limit (CREDENCE_MAX_UPLOAD_BYTES)",
                         headers={"Connection": "close"})


def _malformed(why: str) -> HTTPException:
    return HTTPException(400, f"malformed multipart/form-data body: {why}")


async def body_chunks(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives (reads the ASGI channel itself, so that it can be resumed to drain)."""
    if getattr(request.state, "body_complete", False):
        return
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        complete = not message.get("more_body", False)
        if complete:
            request.state.body_complete = True  # another read would wait for the client to hang up
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if complete:
            return


async def drain(request: Request, budget: int = DRAIN_BYTES) -> None:
    """Discard the rest of the body, up to `budget` bytes (and no longer than the body timeout)."""
    seen = 0
    try:
        async for chunk in body_chunks(request):
            seen += len(chunk)
            if seen > budget:
                return
    except (HTTPException, ClientDisconnect, OSError):  # stalled, or the client went away
        return


class _FilePart:
    """Callbacks for python-multipart: write the first file part's bytes to `handle`."""

    def __init__(self, handle: IO[bytes], limit: int) -> None:
        self.handle = handle
        self.limit = limit
        self.size = 0
        self.filename: str | None = None
        self.ended = False
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._state = "before"  # before -> in_file -> done

    def callbacks(self) -> dict[str, object]:
        return {"on_part_begin": self._part_begin, "on_header_field": self._field,
                "on_header_value": self._value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_done, "on_part_data": self._data,
                "on_part_end": self._part_end, "on_end": self._end}

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
        if self.size <= self.limit:  # past it the caller answers 413
            self.handle.write(data[start:end])

    def _part_end(self) -> None:
        if self._state == "in_file":
            self._state = "done"

    def _end(self) -> None:
        self.ended = True


async def admit_upload(upload_gate: Gate, request: Request) -> Ticket:
    """A place on `upload_gate` before a byte of the upload is read, or 503 at once when it is full
    (after dropping a little of the body, so that an ordinary client sees the answer)."""
    try:
        return upload_gate.admit()
    except Busy:
        await drain(request)
        raise


@asynccontextmanager
async def receive_upload(request: Request, max_bytes: int) -> AsyncIterator[tuple[Path, str | None, int]]:
    """Stream the request's clip to a temporary file; yields (path, client file name, size).

    The file is deleted when the block ends, whatever happens in it.
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    content_type = content_type.lower()
    multipart = content_type == b"multipart/form-data"
    if not multipart and not (content_type.startswith(b"video/") or content_type in (b"application/octet-stream",
                                                                                     b"")):
        raise HTTPException(415, f"unsupported content type {content_type.decode(errors='replace')!r}: "
                                 "send multipart/form-data with a `file` part, or the video bytes")
    body_limit = max_bytes + (ENVELOPE_BYTES if multipart else 0)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > body_limit:
        await drain(request)
        raise _too_large(max_bytes)
    fd, name = tempfile.mkstemp(prefix="credence-upload-")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            if multipart:
                filename, size = await _receive_multipart(request, handle, params, max_bytes, body_limit)
            else:
                filename, size = None, await _receive_raw(request, handle, max_bytes)
        suffix = Path(filename or "").suffix.lower()
        if suffix in _SUFFIXES:
            named = path.with_name(path.name + suffix)
            path.rename(named)
            path = named
        yield path, filename, size
    finally:
        path.unlink(missing_ok=True)


async def _receive_raw(request: Request, handle: IO[bytes], max_bytes: int) -> int:
    size = 0
    async for chunk in body_chunks(request):
        size += len(chunk)
        if size > max_bytes:
            await drain(request)
            raise _too_large(max_bytes)
        handle.write(chunk)
    return size


async def _receive_multipart(request: Request, handle: IO[bytes], params: dict[bytes, bytes], max_bytes: int,
                             body_limit: int) -> tuple[str, int]:
    boundary = params.get(b"boundary")
    if not boundary:
        raise _malformed("no boundary in the Content-Type header")
    if not _BOUNDARY.fullmatch(boundary):
        raise _malformed("the boundary is not 1-70 characters of the RFC 2046 set")
    part = _FilePart(handle, max_bytes)
    try:
        parser = MultipartParser(boundary, part.callbacks())  # type: ignore[arg-type]
    except (MultipartParseError, ValueError) as exc:
        raise _malformed(type(exc).__name__) from None
    seen = 0
    async for chunk in body_chunks(request):
        seen += len(chunk)
        if seen > body_limit:
            await drain(request)
            raise _too_large(max_bytes)
        try:
            parser.write(chunk)
        except (MultipartParseError, ValueError, UnicodeDecodeError) as exc:
            await drain(request)
            raise _malformed(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        if part.size > max_bytes:
            await drain(request)
            raise _too_large(max_bytes)
    if not part.ended:
        raise _malformed("the body ended before the closing boundary (truncated?)")
    if part.filename is None:
        raise RequestValidationError([{"type": "missing", "loc": ("body", "file"), "input": None,
                                       "msg": "the form has no file part (send the clip as field `file`)"}])
    return part.filename, part.size
