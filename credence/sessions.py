"""Console sessions that every API replica shares: in the Redis of `CREDENCE_BROKER_URL`, else in the ledger.

Why not in the process: a session in one process's memory cannot follow a browser to another
replica, and one that keeps a copy of its caller outlives the key's revocation (issue 21). A
session here records only *which key* signed in and until when; the console asks the ledger
about that key, its client and their scopes on every request (`credence.auth.caller_for_key`),
so a revoked or expired key, or a disabled client, ends the session on its next request.

The browser holds a 256-bit random id; the store keeps only its SHA-256, so a copy of the store
(a Redis dump, a ledger backup) hands out no live session. The form's CSRF token is an HMAC of
the id: derived on each request, never stored, bound to the session. A store that cannot be
reached refuses (`SessionStoreUnavailable`, a 503): it never lets a request through unchecked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from sqlalchemy import delete

from provenance.errors import ProvenanceError
from provenance.ledger import Ledger
from provenance.ledger.models import ConsoleSessionRow, as_utc, utcnow

from .auth import Caller
from .settings import Settings

#: A session id is 43 URL-safe characters; a longer cookie is not ours and is not looked up.
MAX_ID_LENGTH = 128
#: Messages kept for the next page at most (a page shows them all, then they are gone).
MAX_FLASH = 20
REDIS_PREFIX = "credence:console:"


class SessionStoreUnavailable(ProvenanceError):
    """The session store (Redis or the ledger) cannot be reached: the console answers 503."""


@dataclass(frozen=True)
class SessionRecord:
    """What the store keeps about one signed-in browser: the key that signed in, and when it ends."""

    key_id: str
    client_id: str
    created_at: float  # seconds since the epoch
    expires_at: float

    @property
    def expired(self) -> bool:
        """Whether the session's own lifetime (CREDENCE_CONSOLE_SESSION_MINUTES) is over."""
        return self.expires_at <= time.time()


def session_digest(sid: str) -> str:
    """What the store keys a session by: the SHA-256 of its id (the id is 256 random bits)."""
    return hashlib.sha256(b"credence-console-session\0" + sid.encode("utf-8", "surrogatepass")).hexdigest()


def csrf_token(sid: str) -> str:
    """The CSRF token of the session `sid`: an HMAC under the id, so it needs no storage and
    tells nothing about the id."""
    return hmac.new(sid.encode("utf-8", "surrogatepass"), b"credence-console-csrf", hashlib.sha256).hexdigest()


class Backend(Protocol):
    """Where sessions live; every method raises `SessionStoreUnavailable` when it cannot answer."""

    def save(self, digest: str, record: SessionRecord) -> None: ...
    def load(self, digest: str) -> SessionRecord | None: ...
    def delete(self, digest: str) -> None: ...
    def push_flash(self, digest: str, message: str, expires_at: float) -> None: ...
    def pop_flash(self, digest: str) -> list[str]: ...


class RedisBackend:
    """Sessions as Redis strings that expire with the session; messages as a list beside each."""

    def __init__(self, url: str, prefix: str = REDIS_PREFIX) -> None:
        import redis

        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self.client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
        self.prefix = prefix

    def _keys(self, digest: str) -> tuple[str, str]:
        return f"{self.prefix}session:{digest}", f"{self.prefix}flash:{digest}"

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self._errors as exc:
            raise SessionStoreUnavailable(f"the console's session store (Redis) cannot {what} "
                                          f"({type(exc).__name__})") from None

    def save(self, digest: str, record: SessionRecord) -> None:
        """Store `record` until it expires (Redis drops it then)."""
        ttl = max(1, math.ceil(record.expires_at - time.time()))
        self._call("store a session", self.client.set, self._keys(digest)[0], json.dumps(asdict(record)), ttl)

    def load(self, digest: str) -> SessionRecord | None:
        """The live session, or None."""
        raw = self._call("read a session", self.client.get, self._keys(digest)[0])
        if raw is None:
            return None
        try:
            record = SessionRecord(**json.loads(raw))
        except (ValueError, TypeError):
            return None  # not a record this code wrote: no session
        return None if record.expired else record

    def delete(self, digest: str) -> None:
        """Forget the session and its messages."""
        self._call("delete a session", self.client.delete, *self._keys(digest))

    def push_flash(self, digest: str, message: str, expires_at: float) -> None:
        """Keep `message` for the session's next page."""
        key = self._keys(digest)[1]

        def push() -> None:
            with self.client.pipeline() as pipe:
                pipe.rpush(key, message.encode())
                pipe.ltrim(key, -MAX_FLASH, -1)
                pipe.expire(key, max(1, math.ceil(expires_at - time.time())))
                pipe.execute()

        self._call("store a message", push)

    def pop_flash(self, digest: str) -> list[str]:
        """The pending messages, removed (one transaction: two pages never both show one)."""
        key = self._keys(digest)[1]

        def pop() -> list[Any]:
            with self.client.pipeline() as pipe:
                pipe.lrange(key, 0, -1)
                pipe.delete(key)
                return pipe.execute()[0]

        return [m.decode() for m in self._call("read messages", pop)]


class LedgerBackend:
    """Sessions as rows of `console_sessions`; expired rows are deleted when a session is made."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def _session(self) -> Any:
        return self.ledger.session()

    def save(self, digest: str, record: SessionRecord) -> None:
        """Insert the row (and sweep expired ones, so the table stays the size of live sessions)."""
        with self._session() as s:
            s.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.expires_at < utcnow()))
            s.add(ConsoleSessionRow(id_hash=digest, key_id=record.key_id, client_id=record.client_id,
                                    created_at=_moment(record.created_at), expires_at=_moment(record.expires_at),
                                    flash=[]))

    def load(self, digest: str) -> SessionRecord | None:
        """The live session, or None (an expired row is deleted as it is met)."""
        with self._session() as s:
            row = s.get(ConsoleSessionRow, digest)
            if row is None:
                return None
            record = SessionRecord(row.key_id, row.client_id, as_utc(row.created_at).timestamp(),
                                   as_utc(row.expires_at).timestamp())
            if record.expired:
                s.delete(row)
                return None
            return record

    def delete(self, digest: str) -> None:
        """Forget the session."""
        with self._session() as s:
            s.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.id_hash == digest))

    def push_flash(self, digest: str, message: str, expires_at: float) -> None:
        """Keep `message` for the session's next page."""
        with self._session() as s:
            row = s.get(ConsoleSessionRow, digest, with_for_update=True)
            if row is not None:
                row.flash = [*(row.flash or []), message][-MAX_FLASH:]

    def pop_flash(self, digest: str) -> list[str]:
        """The pending messages, removed."""
        with self._session() as s:
            row = s.get(ConsoleSessionRow, digest, with_for_update=True)
            if row is None or not row.flash:
                return []
            messages = [str(m) for m in row.flash]
            row.flash = []
            return messages


def _moment(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


class SessionStore:
    """Create, find and end console sessions in a shared backend, by a hash of their id."""

    def __init__(self, backend: Backend, minutes: float) -> None:
        self.backend = backend
        self.seconds = minutes * 60

    @classmethod
    def for_settings(cls, settings: Settings, ledger: Ledger) -> SessionStore:
        """Redis when CREDENCE_BROKER_URL is set (every replica already shares it), else the ledger."""
        backend: Backend = RedisBackend(settings.broker_url) if settings.broker_url else LedgerBackend(ledger)
        return cls(backend, settings.console_session_minutes)

    def create(self, caller: Caller) -> tuple[str, SessionRecord]:
        """A new session for `caller`, under a fresh random id (a session is never adopted: no fixation)."""
        sid = secrets.token_urlsafe(32)
        now = time.time()
        record = SessionRecord(caller.key_id, caller.client_id, now, now + self.seconds)
        self.backend.save(session_digest(sid), record)
        return sid, record

    def get(self, sid: str | None) -> SessionRecord | None:
        """The live session with this id, or None."""
        if not sid or len(sid) > MAX_ID_LENGTH:
            return None
        return self.backend.load(session_digest(sid))

    def drop(self, sid: str | None) -> None:
        """End the session (sign-out, or its key no longer authenticates)."""
        if sid and len(sid) <= MAX_ID_LENGTH:
            self.backend.delete(session_digest(sid))

    def flash(self, sid: str, record: SessionRecord, message: str) -> None:
        """A one-shot message for the session's next page."""
        self.backend.push_flash(session_digest(sid), message[:1000], record.expires_at)

    def pop_flash(self, sid: str) -> list[str]:
        """The messages waiting for this page, removed."""
        return self.backend.pop_flash(session_digest(sid))


__all__ = ["LedgerBackend", "RedisBackend", "SessionRecord", "SessionStore", "SessionStoreUnavailable",
           "csrf_token", "session_digest"]
