"""The web console for reviewers and auditors, served by the API app at `/console`.

Server-rendered Jinja2 pages and plain HTML forms: no JavaScript, no build step, no external
network (the stylesheet and the charts, inline SVG, are served from here). Sign-in takes a key
with the `review` or `audit` scope; the browser then holds only a random session id in a cookie
(HttpOnly, SameSite=Strict, path /console; Secure when the deployment says it is behind TLS, see
`credence.transport`); the key is never stored. Every form carries a CSRF token bound to the
session (and, before sign-in, to a double-submit cookie); a POST without the right one is refused
with 403.

Sessions live in the Redis of CREDENCE_BROKER_URL, else in the ledger (`credence.sessions`), so
every replica shares them; each request asks the ledger again about the key that signed in, so
a revoked or expired key, or a disabled client, ends the session on its next request. Failed
sign-ins are throttled per address and per key prefix (`credence.throttle`) and audited.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..sessions import SessionStoreUnavailable
from ..throttle import ThrottleUnavailable
from .core import HERE, ConsoleError, NotSignedIn, _redirect, render, resume


def make_router() -> APIRouter:
    """The console's routes (kept out of the OpenAPI document)."""
    from . import compliance_page, pages

    router = APIRouter(include_in_schema=False)
    pages.add_routes(router)
    compliance_page.add_routes(router)
    return router


def install(app: Any) -> None:
    """Mount the console on `app`: its routes, its static files, and the sign-in redirect."""
    from fastapi.staticfiles import StaticFiles

    app.include_router(make_router())
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")

    async def not_signed_in(request: Request, _exc: Exception) -> Response:
        return _redirect("/console")

    async def console_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ConsoleError)
        try:
            session = resume(request)
        except (SessionStoreUnavailable, ThrottleUnavailable):
            session = None
        return render(request, "error.html", exc.status, session=session, code=exc.status, detail=exc.detail)

    async def store_unavailable(request: Request, exc: Exception) -> Response:
        # The session store or the sign-in counters are down: refuse (never let a request through
        # unchecked), as a page, with the reason and no detail of our infrastructure.
        what = "sign-in throttle" if isinstance(exc, ThrottleUnavailable) else "session store"
        response = render(request, "error.html", 503, code=503,
                          detail=f"The console's {what} is unavailable; try again shortly.")
        response.headers["Retry-After"] = "5"
        return response

    app.add_exception_handler(NotSignedIn, not_signed_in)
    app.add_exception_handler(ConsoleError, console_error)
    app.add_exception_handler(SessionStoreUnavailable, store_unavailable)
    app.add_exception_handler(ThrottleUnavailable, store_unavailable)


__all__ = ["install", "make_router"]
