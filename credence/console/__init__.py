"""The web console for reviewers and auditors, served by the API app at `/console`.

Server-rendered Jinja2 pages and plain HTML forms: no JavaScript, no build step, no external
network (the stylesheet and the charts, inline SVG, are served from here). Sign-in takes a key
with the `review` or `audit` scope; the browser then holds only a random session id in a cookie
(HttpOnly, SameSite=Strict, path /console, Secure over HTTPS); the key never leaves the server's
memory. Every form carries a CSRF token bound to the session (and, before sign-in, to a
double-submit cookie); a POST without the right one is refused with 403.

Sessions live in this process (`SessionStore`): behind several API replicas, pin the console to
one of them or sign in again after a failover.
"""

from __future__ import annotations

import hmac
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..auth import Caller, authenticate, register_bootstrap_keys
from ..runtime import Runtime

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "credence_console"
PRESESSION_COOKIE = "credence_console_csrf"
COOKIE_PATH = "/console"
#: Scopes that may sign in, and what each page needs.
CONSOLE_SCOPES = ("review", "audit")

_templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                         trim_blocks=True, lstrip_blocks=True)


@dataclass
class ConsoleSession:
    """One signed-in browser: who, its CSRF token, when it ends, and a one-shot message."""

    caller: Caller
    csrf: str
    expires: float
    flash: list[str] = field(default_factory=list)

    def can(self, scope: str) -> bool:
        """Whether the signed-in key carries `scope`."""
        return self.caller.can(scope)


class SessionStore:
    """Server-side sessions, by a 256-bit random id; expired ones are dropped as they are met."""

    def __init__(self, minutes: float) -> None:
        self.seconds = minutes * 60
        self._sessions: dict[str, ConsoleSession] = {}
        self._lock = threading.Lock()

    def create(self, caller: Caller) -> tuple[str, ConsoleSession]:
        """A new session for `caller` (a fresh id: no fixation)."""
        sid = secrets.token_urlsafe(32)
        session = ConsoleSession(caller, secrets.token_urlsafe(32), time.monotonic() + self.seconds)
        with self._lock:
            now = time.monotonic()
            for key in [k for k, v in self._sessions.items() if v.expires < now]:
                del self._sessions[key]
            self._sessions[sid] = session
        return sid, session

    def get(self, sid: str | None) -> ConsoleSession | None:
        """The live session with this id, or None."""
        if not sid:
            return None
        with self._lock:
            session = self._sessions.get(sid)
            if session is not None and session.expires < time.monotonic():
                del self._sessions[sid]
                return None
            return session

    def drop(self, sid: str | None) -> None:
        """Sign out."""
        if sid:
            with self._lock:
                self._sessions.pop(sid, None)


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def _store(request: Request) -> SessionStore:
    state = request.app.state
    if getattr(state, "console_sessions", None) is None:
        state.console_sessions = SessionStore(state.runtime.settings.console_session_minutes)
    return state.console_sessions


def _security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = ("default-src 'none'; style-src 'self'; img-src 'self'; "
                                                   "media-src 'self'; form-action 'self'; frame-ancestors 'none'; "
                                                   "base-uri 'none'")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def render(request: Request, template: str, status: int = 200, session: ConsoleSession | None = None,
           **context: Any) -> HTMLResponse:
    """A page of the console, with the session's CSRF token and pending messages."""
    flash = []
    if session is not None:
        flash, session.flash = session.flash, []
    html = _templates.get_template(template).render(session=session, csrf=session.csrf if session else None,
                                                    flash=flash, **context)
    return _security_headers(HTMLResponse(html, status))  # type: ignore[return-value]


class NotSignedIn(Exception):
    """The page needs a session: the browser is sent to the sign-in page."""


class ConsoleError(Exception):
    """A refusal or an error on a console page, answered as an HTML page (not a JSON problem)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def current(request: Request) -> ConsoleSession:
    """The signed-in session (pages redirect to the sign-in page without one)."""
    session = _store(request).get(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise NotSignedIn()
    return session


def needs(scope: str) -> Any:
    """A dependency: the session, 403 unless its key carries `scope`."""

    def dependency(session: ConsoleSession = Depends(current)) -> ConsoleSession:
        if not session.can(scope):
            raise ConsoleError(403, f"this key does not carry the {scope!r} scope")
        return session

    return dependency


def check_csrf(session: ConsoleSession, supplied: str | None) -> None:
    """Refuse a form whose token is not this session's (constant-time comparison)."""
    if not supplied or not hmac.compare_digest(supplied.encode(), session.csrf.encode()):
        raise ConsoleError(403, "the form's CSRF token is missing or wrong; reload the page and try again")


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path=COOKIE_PATH, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def make_router() -> APIRouter:
    """The console's routes (kept out of the OpenAPI document)."""
    from . import pages

    router = APIRouter(include_in_schema=False)
    pages.add_routes(router)
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
        session = _store(request).get(request.cookies.get(SESSION_COOKIE))
        return render(request, "error.html", exc.status, session=session, code=exc.status, detail=exc.detail)

    app.add_exception_handler(NotSignedIn, not_signed_in)
    app.add_exception_handler(ConsoleError, console_error)


def sign_in(request: Request, key: str) -> tuple[str, ConsoleSession] | str:
    """A new session for `key`, or why not (a sentence for the sign-in page)."""
    runtime = _runtime(request)
    state = request.app.state
    if not getattr(state, "bootstrapped", False):
        register_bootstrap_keys(runtime.ledger, runtime.settings.api_keys)
        state.bootstrapped = True
    caller = authenticate(runtime.ledger, key.strip())
    if caller is None:
        return "That key is not valid (unknown, revoked or expired)."
    if not any(caller.can(scope) for scope in CONSOLE_SCOPES):
        return "That key carries neither the review nor the audit scope."
    with runtime.ledger.session() as s:
        runtime.ledger.audit(s, caller.actor, "console.signin", None, client_id=caller.client_id,
                             key_id=caller.key_id)
    return _store(request).create(caller)


def save_upload(upload: Any, limit: int) -> tuple[Path, int]:
    """Copy an uploaded file to a private temporary file, refusing more than `limit` bytes."""
    handle = tempfile.NamedTemporaryFile(prefix="credence-upload-", suffix=Path(upload.filename or "").suffix[:8],
                                         delete=False)
    size = 0
    try:
        with handle:
            while chunk := upload.file.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise ConsoleError(413, f"the upload is larger than {limit} bytes")
                handle.write(chunk)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return Path(handle.name), size


__all__ = ["ConsoleError", "ConsoleSession", "SessionStore", "check_csrf", "current", "install", "make_router",
           "needs", "render", "save_upload", "sign_in"]
