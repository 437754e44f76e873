"""What every console page uses: sessions (resumed and re-checked per request), sign-in with its
throttle and audit, rendering, cookies, CSRF, refusals as HTML, and the upload copy.

Kept apart from the package's `__init__` (which mounts the pages) so that the pages import this
module and nothing imports back: no cycle between the console's modules.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..auth import Caller, authenticate, caller_for_key, key_prefix, register_bootstrap_keys
from ..runtime import Runtime
from ..sessions import SessionRecord, SessionStore, csrf_token
from ..throttle import SignInThrottle, client_address
from ..transport import is_https

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
    """One signed-in browser on this request: its caller as the ledger says now, and its CSRF token."""

    caller: Caller
    csrf: str
    sid: str
    record: SessionRecord
    store: SessionStore

    def can(self, scope: str) -> bool:
        """Whether the signed-in key carries `scope` (as of this request)."""
        return self.caller.can(scope)

    def say(self, message: str) -> None:
        """A one-shot message for the next page (kept in the shared store: any replica shows it)."""
        self.store.flash(self.sid, self.record, message)


class SignInFailed(Exception):
    """A sign-in refused: the sign-in page again, with this status, sentence and `Retry-After`."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def _store(request: Request) -> SessionStore:
    state = request.app.state
    if getattr(state, "console_sessions", None) is None:
        state.console_sessions = SessionStore.for_settings(state.runtime.settings, state.runtime.ledger)
    return state.console_sessions


def _throttle(request: Request) -> SignInThrottle:
    state = request.app.state
    if getattr(state, "signin_throttle", None) is None:
        state.signin_throttle = SignInThrottle(state.runtime.settings)
    return state.signin_throttle


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
    flash = session.store.pop_flash(session.sid) if session is not None else []
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


def resume(request: Request) -> ConsoleSession | None:
    """The browser's session, if it has a live one whose key still works and may use the console.

    The key, its client and their scopes are read from the ledger on every request; a session whose
    key was revoked or expired, or whose client was disabled, is deleted here (and audited).
    """
    sid = request.cookies.get(SESSION_COOKIE)
    store = _store(request)
    record = store.get(sid)
    if sid is None or record is None:
        return None
    runtime = _runtime(request)
    caller = caller_for_key(runtime.ledger, record.key_id)
    if isinstance(caller, str) or not any(caller.can(scope) for scope in CONSOLE_SCOPES):
        store.drop(sid)
        reason = caller if isinstance(caller, str) else "no review or audit scope"
        with runtime.ledger.session() as s:
            runtime.ledger.audit(s, "console", "console.session_ended", None, client_id=record.client_id,
                                 key_id=record.key_id, reason=reason)
        return None
    return ConsoleSession(caller, csrf_token(sid), sid, record, store)


def current(request: Request) -> ConsoleSession:
    """The signed-in session (pages redirect to the sign-in page without one)."""
    session = resume(request)
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
                        secure=is_https(request, request.app.state.runtime.settings))


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _audit_attempt(runtime: Runtime, action: str, address: str, prefix: str | None, **details: Any) -> None:
    """Audit a refused sign-in: the address, and the key's public prefix when it has one (with the
    key and client it names, if any); never what was typed."""
    from sqlalchemy import select

    from provenance.ledger.models import ApiKey

    with runtime.ledger.session() as s:
        known = None
        if prefix is not None:
            known = s.execute(select(ApiKey.id, ApiKey.client_id).where(ApiKey.prefix == prefix)).first()
        extra = {"prefix": prefix} if prefix is not None else {}
        runtime.ledger.audit(s, "console", action, None, client_id=known[1] if known else None,
                             key_id=known[0] if known else None, address=address, **extra, **details)


def sign_in(request: Request, key: str) -> tuple[str, SessionRecord]:
    """A new session for `key` (its id and record), or `SignInFailed` saying why not.

    Failed attempts are counted per client address and per key prefix; past the limit the answer
    is 429 with Retry-After before the key is looked at. Every failure is audited.
    """
    runtime = _runtime(request)
    settings = runtime.settings
    state = request.app.state
    if not getattr(state, "bootstrapped", False):
        register_bootstrap_keys(runtime.ledger, settings.api_keys)
        state.bootstrapped = True
    key = key.strip()
    address, prefix = client_address(request, settings), key_prefix(key)
    throttle = _throttle(request)
    wait = throttle.retry_after(address, prefix)
    if wait is not None:
        if throttle.first_refusal(address):
            _audit_attempt(runtime, "console.signin_throttled", address, prefix, retry_after=wait)
        raise SignInFailed(429, f"Too many failed sign-ins from this address or with this key; try again in "
                                f"{wait} s.", wait)
    caller = authenticate(runtime.ledger, key)
    if caller is None:
        throttle.failed(address, prefix)
        _audit_attempt(runtime, "console.signin_failed", address, prefix, reason="not a valid key")
        raise SignInFailed(401, "That key is not valid (unknown, revoked or expired).")
    if not any(caller.can(scope) for scope in CONSOLE_SCOPES):
        _audit_attempt(runtime, "console.signin_failed", address, prefix, reason="no review or audit scope")
        raise SignInFailed(401, "That key carries neither the review nor the audit scope.")
    with runtime.ledger.session() as s:
        runtime.ledger.audit(s, caller.actor, "console.signin", None, client_id=caller.client_id,
                             key_id=caller.key_id, address=address)
    return _store(request).create(caller)


__all__ = ["CONSOLE_SCOPES", "ConsoleError", "ConsoleSession", "NotSignedIn", "SignInFailed", "check_csrf", "current",
           "needs", "render", "resume", "sign_in"]
