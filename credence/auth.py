"""Who is calling: clients, API keys and scopes, kept in the ledger.

A key is `cred_<prefix>_<secret>`: the `cred_` marker lets secret scanners recognise a leaked key,
the public prefix finds its row without a scan, and only the SHA-256 of the secret is stored (the
secret is 256 random bits, so a fast hash is as good as a slow one; nothing to brute-force). The
comparison is constant-time. Keys from `CREDENCE_API_KEYS` are bootstrap keys of the `operator`
client with every scope, recorded in the ledger by their hash like any other key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from provenance.errors import ProvenanceError
from provenance.ledger import Ledger
from provenance.ledger.models import SCOPES, ApiKey, Client, as_utc, utcnow

KEY_MARKER = "cred"
OPERATOR = "operator"
#: A key that was used is stamped at most this often (a write per request would serialise the API).
LAST_USED_GRANULARITY = dt.timedelta(seconds=60)


class AuthError(ProvenanceError):
    """A client or key command could not be carried out (unknown client, bad scope, ...)."""


@dataclass(frozen=True)
class Caller:
    """The authenticated caller of one request: never any secret material."""

    client_id: str
    client_name: str
    key_id: str
    scopes: frozenset[str]
    rate_limit: str | None = None
    daily_generations: int | None = None
    operator: bool = False
    #: The person a review key belongs to (`keys create --reviewer NAME`); None for other keys.
    reviewer: str | None = None

    @property
    def actor(self) -> str:
        """How the audit log names the caller."""
        return f"client:{self.client_id}/key:{self.key_id}"

    def can(self, scope: str) -> bool:
        """True when the key carries `scope` (`admin` implies every other scope)."""
        return scope in self.scopes or "admin" in self.scopes

    def to_dict(self) -> dict[str, Any]:
        """`GET /v1/whoami`."""
        return {"client_id": self.client_id, "client_name": self.client_name, "key_id": self.key_id,
                "scopes": sorted(self.scopes)}


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def parse_scopes(text: str | list[str]) -> list[str]:
    """`generate,verify` → ['generate', 'verify']; an unknown scope is an error naming it."""
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    unknown = [s for s in items if s not in SCOPES]
    if unknown:
        raise AuthError(f"unknown scope {unknown[0]!r}; scopes are {', '.join(SCOPES)}")
    if not items:
        raise AuthError("a key needs at least one scope")
    return sorted(set(items))


def reviewer_name(name: str | None) -> str | None:
    """A reviewer's name as stored: spaces collapsed, 1 to 200 printable characters (None stays None)."""
    if name is None:
        return None
    cleaned = " ".join(name.split())
    if not cleaned or len(cleaned) > 200 or not cleaned.isprintable():
        raise AuthError("--reviewer must be a person's name: 1 to 200 printable characters")
    return cleaned


def new_key(session: Any, client: Client, scopes: list[str], *, expires_at: dt.datetime | None = None,
            reviewer: str | None = None) -> tuple[ApiKey, str]:
    """Create a key for `client`; returns the row and the key, which is shown once and never stored.

    `reviewer` names the person who holds a review key: approvals count people, not keys.
    """
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    row = ApiKey(client_id=client.id, prefix=prefix, secret_hash=_digest(secret), scopes=scopes,
                 expires_at=expires_at, reviewer=reviewer_name(reviewer))
    session.add(row)
    session.flush()
    return row, f"{KEY_MARKER}_{prefix}_{secret}"


def _split(key: str) -> tuple[str, str] | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_MARKER or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def _bootstrap_prefix(key: str) -> str:
    return "env" + _digest(key)[:24]


def register_bootstrap_keys(ledger: Ledger, keys: tuple[str, ...]) -> None:
    """Record `CREDENCE_API_KEYS` as keys of the operator client (every scope), by hash only."""
    if not keys:
        return
    with ledger.session() as s:
        client = s.scalars(select(Client).where(Client.name == OPERATOR)).first()
        if client is None:
            client = Client(name=OPERATOR, operator=True)
            s.add(client)
            s.flush()
            ledger.audit(s, "serve", "client.created", client.id, name=OPERATOR, bootstrap=True)
        for key in keys:
            prefix = _bootstrap_prefix(key)
            if s.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).first() is None:
                row = ApiKey(client_id=client.id, prefix=prefix, secret_hash=_digest(key), scopes=list(SCOPES))
                s.add(row)
                s.flush()
                ledger.audit(s, "serve", "key.created", row.id, client_id=client.id, bootstrap=True)


def key_prefix(key: str) -> str | None:
    """The public prefix of a `cred_` key (what the sign-in throttle and audit name), or None for
    anything else: an unstructured string may be a pasted password, so nothing of it is kept."""
    parts = _split(key.strip()) if key and len(key) <= 512 else None
    if parts is None or not re.fullmatch(r"[0-9a-f]{1,32}", parts[0]):
        return None
    return parts[0]


def _refusal(row: ApiKey, now: dt.datetime) -> str | None:
    """Why a key no longer authenticates (`revoked`, `expired`, `client disabled`), or None."""
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and as_utc(row.expires_at) <= now:
        return "expired"
    if row.client.disabled:
        return "client disabled"
    return None


def _caller(row: ApiKey) -> Caller:
    client = row.client
    return Caller(client_id=client.id, client_name=client.name, key_id=row.id, scopes=frozenset(row.scopes),
                  rate_limit=client.rate_limit, daily_generations=client.daily_generations,
                  operator=client.operator, reviewer=row.reviewer)


def caller_for_key(ledger: Ledger, key_id: str) -> Caller | str:
    """The caller of a key, by its id, as the ledger says now; or why it no longer authenticates.

    A console session keeps only its key's id and asks this on every request, so that a revoked
    or expired key, or a disabled client, ends the session at once and a change of scopes applies.
    """
    with ledger.session() as s:
        row = s.get(ApiKey, key_id)
        if row is None:
            return "unknown key"
        return _refusal(row, utcnow()) or _caller(row)


def authenticate(ledger: Ledger, key: str) -> Caller | None:
    """The caller a key belongs to, or None (unknown, revoked, expired, or its client disabled)."""
    if not key or len(key) > 512:
        return None
    parts = _split(key)
    prefix, secret = parts if parts else (_bootstrap_prefix(key), key)
    with ledger.session() as s:
        row = s.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).first()
        # Compare against a dummy hash when there is no row, so that timing says nothing either way.
        expected = row.secret_hash if row is not None else _digest("absent")
        if not hmac.compare_digest(expected.encode(), _digest(secret).encode()) or row is None:
            return None
        now = utcnow()
        if _refusal(row, now) is not None:
            return None
        if row.last_used_at is None or now - as_utc(row.last_used_at) > LAST_USED_GRANULARITY:
            s.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
        return _caller(row)
