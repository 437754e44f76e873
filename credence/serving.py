"""uvicorn's connection-limit refusal as a problem (RFC 9457), like every other error of the API.

`credence serve` caps open connections and in-flight requests (`limit_concurrency`); past the
cap uvicorn answers `503 Service Unavailable` in plain text from inside its HTTP protocol, before
the app (and its error handlers) ever sees the request. A client that parses every error as
`application/problem+json` then trips on it. uvicorn has no hook for that answer, but it takes an
HTTP protocol class: `problem_overflow_protocol` returns uvicorn's own protocol with its check
moved in front of the app, under the same rule (connections open, or requests in flight, at the
cap), answering a problem with `Retry-After` and `Connection: close` instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

log = logging.getLogger("uvicorn.error")

OVERFLOW_PROBLEM = json.dumps({
    "type": "urn:credence:problem:busy", "title": "Service Unavailable", "status": 503,
    "detail": "the server is at its connection limit (CREDENCE_MAX_CONNECTIONS); retry later", "errors": [],
}).encode()
RETRY_AFTER_SECONDS = 1


async def overflow_problem(scope: Scope, receive: Receive, send: Send) -> None:
    """The 503 problem for a request over the connection limit (the connection is closed after it)."""
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/problem+json"), (b"content-length", str(len(OVERFLOW_PROBLEM)).encode()),
        (b"retry-after", str(RETRY_AFTER_SECONDS).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": OVERFLOW_PROBLEM, "more_body": False})


def _base_protocol() -> type:
    """The protocol uvicorn's `http="auto"` picks: httptools when installed, else h11."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol


def problem_overflow_protocol(base: type | None = None) -> type:
    """uvicorn's HTTP protocol `base` (auto when None), answering its concurrency overflow as a problem.

    Pass it as `http=` to `uvicorn.run` / `uvicorn.Config`, with `limit_concurrency` as usual.
    """
    parent: Any = base or _base_protocol()

    class ProblemOverflowProtocol(parent):  # type: ignore[misc,valid-type]
        """`parent`, with the limit checked in front of the app instead of inside the protocol."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            limit = self.limit_concurrency
            self.limit_concurrency = None  # uvicorn's plain-text refusal is off; `guarded` refuses instead
            inner = self.app

            async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
                # uvicorn checks before it makes the request's task; here that task is already counted.
                if limit is not None and scope.get("type") == "http" and (
                        len(self.connections) >= limit or len(self.tasks) - 1 >= limit):
                    log.warning("Exceeded concurrency limit.")
                    await overflow_problem(scope, receive, send)
                    return
                await inner(scope, receive, send)

            self.app = guarded

    ProblemOverflowProtocol.__qualname__ = f"ProblemOverflow{parent.__name__}"
    return ProblemOverflowProtocol


__all__ = ["OVERFLOW_PROBLEM", "overflow_problem", "problem_overflow_protocol"]
