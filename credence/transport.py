"""Whether a request reached the deployment over HTTPS, as the operator declares it; and HSTS.

Why a setting: `credence serve` speaks plain HTTP behind a TLS-terminating proxy, so the request
it sees is `http` even when the browser's was `https`; the console's cookie then lacked `Secure`
and no answer carried HSTS (issue 21). `CREDENCE_BEHIND_TLS=1` says every request arrived over
TLS. `X-Forwarded-Proto` is any client's to send, so it is believed only with
`CREDENCE_TRUST_FORWARDED_PROTO=1`, where the operator's proxy sets it (and overwrites a
client's); uvicorn's own proxy-header handling stays off (`serve_config`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .settings import Settings

#: One year, the usual preload-list minimum; no includeSubDomains: other hosts are not ours to bind.
HSTS = "max-age=31536000"


def _forwarded_https(headers: Any) -> bool:
    value = headers.get("x-forwarded-proto", "") if headers is not None else ""
    return value.split(",")[0].strip().lower() == "https"


def is_https(request: Any, settings: Settings) -> bool:
    """Whether the browser's request was HTTPS: declared by `CREDENCE_BEHIND_TLS`, or told by a
    trusted proxy's `X-Forwarded-Proto` (only with `CREDENCE_TRUST_FORWARDED_PROTO`)."""
    return settings.behind_tls or (settings.trust_forwarded_proto and _forwarded_https(request.headers))


ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[dict[str, Any]]],
                    Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]


class StrictTransportSecurity:
    """Adds `Strict-Transport-Security` to every answer of a request that `is_https` (pure ASGI)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http" or not self._https(scope):
            await self.app(scope, receive, send)
            return

        async def send_with_hsts(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"strict-transport-security"]
                headers.append((b"strict-transport-security", HSTS.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_hsts)

    def _https(self, scope: MutableMapping[str, Any]) -> bool:
        if self.settings.behind_tls:
            return True
        if not self.settings.trust_forwarded_proto:
            return False
        for name, value in scope.get("headers", []):
            if name.lower() == b"x-forwarded-proto":  # the first, as Starlette's request.headers.get reads
                return _forwarded_https({"x-forwarded-proto": value.decode("latin-1")})
        return False


def install(app: Any, settings: Settings) -> None:
    """Add HSTS to `app` when the deployment may be reached over HTTPS (nothing otherwise)."""
    if settings.behind_tls or settings.trust_forwarded_proto:
        app.add_middleware(StrictTransportSecurity, settings=settings)


__all__ = ["HSTS", "StrictTransportSecurity", "install", "is_https"]
