"""Refuse a body by its declared `Content-Length` before reading any of it: 413 at once.

uvicorn reads a declared body for as long as the client sends it. A request that declares
10^15 bytes and sends nothing was answered only when the body timeout ran out (30 s), holding a
connection and a request slot all that time; one that sends was read (and drained) up to the
route's limit first. This middleware looks at the header alone: over the route's limit, the
answer is 413 (a problem, or a short HTML page under `/console`) with `Connection: close`.

The limit is the upload limit plus the multipart envelope on the routes that take a clip, and
`max_body_bytes` (1 MiB by default: prompts, review notes, forms) everywhere else. A client that
declared a little too much is still drained (at most `DRAIN_BYTES`, and only while it keeps
sending) so that it reads the 413 instead of a reset connection; one that declared more than
that could never be drained and is answered at once. Chunked bodies (no length) are counted by
the upload routes as they stream (`credence.routes.uploads`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .routes.uploads import DRAIN_BYTES, ENVELOPE_BYTES

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Paths whose body is a clip (the upload limit applies); every other body gets `max_body_bytes`.
UPLOAD_PATHS = frozenset({"/v1/verify", "/matches/byContent", "/console/verify"})
#: A drain stops when the client pauses this long (it is not sending: answer now).
DRAIN_IDLE_SECONDS = 1.0
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


def declared_length(scope: Scope) -> int | None:
    """The request's `Content-Length`, or None when absent; -1 when it is not a single decimal number."""
    values = [v for k, v in scope.get("headers", []) if k.lower() == b"content-length"]
    if not values:
        return None
    text = values[0].decode("latin-1").strip()
    if len(values) > 1 or not text.isdigit():
        return -1
    return int(text)


class DeclaredLengthLimit:
    """ASGI middleware: 413 for a declared body over the route's limit, before reading it."""

    def __init__(self, app: ASGIApp, *, upload_bytes: int, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.upload_bytes = upload_bytes
        self.max_body_bytes = max_body_bytes

    def limit_for(self, path: str) -> tuple[int, str]:
        """The most bytes a body may declare on `path`, and the setting that says so."""
        if path in UPLOAD_PATHS:
            return self.upload_bytes + ENVELOPE_BYTES, "CREDENCE_MAX_UPLOAD_BYTES"
        return self.max_body_bytes, "CREDENCE_MAX_BODY_BYTES"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope)
        if declared is None:
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit, setting = self.limit_for(path)
        if declared == -1:
            await _refuse(scope, send, 400, "the Content-Length header is not one decimal number", console=False)
            return
        if declared <= limit:
            await self.app(scope, receive, send)
            return
        if declared - limit <= DRAIN_BYTES:
            await _drain(receive, declared)
        shown = self.upload_bytes if path in UPLOAD_PATHS else limit
        await _refuse(scope, send, 413, f"the body declares {declared} bytes, over the {shown} byte limit ({setting})",
                      console=path.startswith("/console"))


async def _drain(receive: Receive, declared: int) -> None:
    """Read and drop what the client is sending, while it keeps sending (bounded by `DRAIN_BYTES`)."""
    seen = 0
    try:
        while seen < min(declared, DRAIN_BYTES):
            message = await asyncio.wait_for(receive(), DRAIN_IDLE_SECONDS)
            if message.get("type") != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return
    except Exception:  # paused (TimeoutError), gone, or the body timeout: answer now
        return


async def _refuse(scope: Scope, send: Send, status: int, detail: str, *, console: bool) -> None:
    title = "Content Too Large" if status == 413 else "Bad Request"
    if console:
        body = (f"<!doctype html><title>{status} {title}</title><h1>{title}</h1><p>{detail}</p>").encode()
        media = b"text/html; charset=utf-8"
    else:
        body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail,
                           "errors": []}).encode()
        media = b"application/problem+json"
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", media), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


__all__ = ["DEFAULT_MAX_BODY_BYTES", "DRAIN_BYTES", "UPLOAD_PATHS", "DeclaredLengthLimit", "declared_length"]
