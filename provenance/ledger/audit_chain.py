"""The audit log as a hash chain: every row carries the hash of the row before it.

Why: the append-only triggers stop ordinary code from changing the log, but not someone with the
database's owner password. With the chain, any row edited, deleted or slipped in breaks a link
that `verify` names (`row <id>`), and the head (last id, last hash, row count) can be exported and
signed so that even a rewrite of the whole tail is caught against an earlier signed head.

Canonical encoding (version 1): the SHA-256 of the compact JSON array
`[1, id, at, actor, action, subject, details, client_id, key_id, prev_hash]` with sorted keys and
ASCII escapes, `at` as UTC `YYYY-MM-DDTHH:MM:SS.ffffffZ`. The first row's `prev_hash` is 64 zeros.

Appends are serialised by one lock row (`audit_chain_head`, id 1): an append first UPDATEs it,
which takes the row lock on PostgreSQL (held to commit, so several API processes and workers
extend the chain one at a time) and the write lock on SQLite; only then does it read the head.
Ids are given out under that lock (head + 1), so the chain has no gaps: a missing id is a
deleted row.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from .models import AuditChainHead, AuditEntry, utcnow

#: `prev_hash` of the first row.
GENESIS = "0" * 64
#: Version of the canonical encoding, hashed into every row.
ENCODING_VERSION = 1
#: Rows fetched per round trip when walking the chain.
BATCH = 5000


def canonical_time(moment: dt.datetime) -> str:
    """A timestamp as the chain hashes it: UTC, microseconds, `Z` (SQLite hands back naive UTC)."""
    moment = moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def normalise_details(details: dict[str, Any]) -> dict[str, Any]:
    """`details` as the JSON column will hand it back (tuples become lists, keys strings)."""
    return json.loads(json.dumps(details, default=str))


def row_hash(entry_id: int, at: dt.datetime, actor: str, action: str, subject: str | None,
             details: dict[str, Any] | None, client_id: str | None, key_id: str | None, prev_hash: str) -> str:
    """SHA-256 hex of one row's canonical encoding, chained to `prev_hash`."""
    payload = json.dumps([ENCODING_VERSION, entry_id, canonical_time(at), actor, action, subject, details or {},
                          client_id, key_id, prev_hash], sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(payload.encode("ascii")).hexdigest()


def _lock_head(session: Session) -> tuple[int, str, int]:
    """Take the chain's lock row and read the head under it: (last id, last hash, rows)."""
    # The UPDATE comes first so that the read happens under the lock (PostgreSQL re-reads the row
    # once a concurrent holder commits; SQLite has taken its write lock).
    row = session.execute(update(AuditChainHead).where(AuditChainHead.id == 1)
                          .values(row_count=AuditChainHead.row_count + 0)
                          .returning(AuditChainHead.last_id, AuditChainHead.last_hash, AuditChainHead.row_count)
                          .execution_options(synchronize_session=False)).first()
    if row is not None:
        return int(row[0]), str(row[1]), int(row[2])
    # No lock row (a database built without the migrations): start one from the log as it is.
    last = session.execute(select(AuditEntry.id, AuditEntry.row_hash).order_by(AuditEntry.id.desc()).limit(1)).first()
    count = session.scalar(select(func.count()).select_from(AuditEntry)) or 0
    head = AuditChainHead(id=1, last_id=last[0] if last else 0, last_hash=(last[1] if last else None) or GENESIS,
                          row_count=count)
    session.add(head)
    session.flush()
    return head.last_id, head.last_hash, head.row_count


def append(session: Session, actor: str, action: str, subject: str | None, details: dict[str, Any], *,
           client_id: str | None = None, key_id: str | None = None) -> AuditEntry:
    """Append one chained row inside the caller's unit of work (the lock is held until it commits)."""
    last_id, last_hash, rows = _lock_head(session)
    entry_id, at, details = last_id + 1, utcnow(), normalise_details(details)
    digest = row_hash(entry_id, at, actor, action, subject, details, client_id, key_id, last_hash)
    entry = AuditEntry(id=entry_id, at=at, actor=actor, action=action, subject=subject, details=details,
                       client_id=client_id, key_id=key_id, prev_hash=last_hash, row_hash=digest)
    session.add(entry)
    session.flush([entry])
    session.execute(update(AuditChainHead).where(AuditChainHead.id == 1)
                    .values(last_id=entry_id, last_hash=digest, row_count=rows + 1, updated_at=at)
                    .execution_options(synchronize_session=False))
    return entry


# -- verification -----------------------------------------------------------------------------
@dataclass(frozen=True)
class VerifyReport:
    """What `credence audit verify` found: `ok`, rows walked, and the first break (`row` named)."""

    ok: bool
    rows: int
    head_id: int | None
    head_hash: str | None
    row: int | None = None
    problem: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)

    def line(self) -> str:
        """One line for a terminal."""
        if self.ok:
            return f"audit chain intact: {self.rows} rows, head row {self.head_id} {self.head_hash}"
        return f"audit chain broken at row {self.row}: {self.problem}"


_COLUMNS = (AuditEntry.id, AuditEntry.at, AuditEntry.actor, AuditEntry.action, AuditEntry.subject,
            AuditEntry.details, AuditEntry.client_id, AuditEntry.key_id, AuditEntry.prev_hash, AuditEntry.row_hash)


def _rows(connection: Connection) -> Iterator[Any]:
    """Every row in id order, streamed (server-side cursor on PostgreSQL), keyset-paged."""
    after = None
    while True:
        query = select(*_COLUMNS).order_by(AuditEntry.id).limit(BATCH)
        if after is not None:
            query = query.where(AuditEntry.id > after)
        batch = connection.execute(query).all()
        if not batch:
            return
        yield from batch
        after = batch[-1][0]


def verify(engine: Engine) -> VerifyReport:
    """Walk the whole chain once (O(rows), constant memory) and name the first row that breaks it.

    Checks, in id order: each row's `prev_hash` is the hash of the row before it and the ids run
    without a gap (else a row was deleted there, or this one slipped in); each row's own hash
    matches its content (else it was edited); the last row is the recorded head (else rows were
    added past it or deleted from the end).
    """
    import time

    started = time.perf_counter()
    prev_id, prev_hash, count = 0, GENESIS, 0
    with engine.connect() as connection:
        head = connection.execute(select(AuditChainHead.last_id, AuditChainHead.last_hash, AuditChainHead.row_count)
                                  .where(AuditChainHead.id == 1)).first()
        def broken(row: int, problem: str) -> VerifyReport:
            return VerifyReport(False, count, head[0] if head else None, head[1] if head else None, row, problem,
                                time.perf_counter() - started)

        for entry_id, at, actor, action, subject, details, client_id, key_id, prev, digest in _rows(connection):
            # A gap in the ids is fine where the link holds (the backfill chained over ids an old
            # rollback skipped); since the chain exists, a deleted row also breaks the link.
            if prev != prev_hash:
                if entry_id > prev_id + 1:
                    return broken(prev_id + 1, f"deleted (ids jump from {prev_id} to {entry_id} and row {entry_id} "
                                               "does not chain to the row before it)")
                return broken(entry_id, f"inserted out of order (its prev_hash is not the hash of row {prev_id})")
            if digest != row_hash(entry_id, at, actor, action, subject, details, client_id, key_id, prev):
                return broken(entry_id, "edited (its content does not match its hash)")
            prev_id, prev_hash, count = entry_id, digest, count + 1
        if head is not None and (prev_id, prev_hash) != (head[0], head[1]):
            if prev_id > head[0]:
                return broken(head[0] + 1, f"inserted after the recorded head (head is row {head[0]}, "
                                           f"the log runs to row {prev_id})")
            if prev_id < head[0]:
                return broken(prev_id + 1, f"deleted (the log ends at row {prev_id}, the recorded head is row "
                                           f"{head[0]})")
            return broken(prev_id, "edited and re-hashed (its hash is not the recorded head's)")
    return VerifyReport(True, count, prev_id or None, prev_hash if count else None,
                        seconds=time.perf_counter() - started)


# -- the head, exported and signed -----------------------------------------------------------
def head(engine: Engine) -> dict[str, Any]:
    """The chain's head as recorded: last id, last hash, row count, when it moved."""
    with engine.connect() as connection:
        row = connection.execute(select(AuditChainHead).where(AuditChainHead.id == 1)).first()
    if row is None:
        return {"last_id": 0, "last_hash": GENESIS, "rows": 0, "updated_at": None}
    return {"last_id": row.last_id, "last_hash": row.last_hash, "rows": row.row_count,
            "updated_at": canonical_time(row.updated_at) if row.updated_at else None}


def signed_head(engine: Engine, identity: Any) -> dict[str, Any]:
    """The head with an ES256 signature by the deployment's signing identity (key or KMS callback).

    Kept outside the database (a ticket, a write-once bucket), it proves later that no row up to
    `last_id` changed and that the log was not cut back, even by someone who controls the database.
    """
    body = head(engine) | {"signed_at": canonical_time(utcnow()), "encoding": ENCODING_VERSION}
    message = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    if identity.callback is not None:
        signature = identity.callback(message)
    else:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = serialization.load_pem_private_key(identity.key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
    return {"head": body, "signature": base64.b64encode(signature).decode(), "alg": "ES256",
            "signer": identity.leaf_fingerprint, "certificate_chain": identity.chain_pem.decode()}


def verify_signed_head(document: dict[str, Any], anchors_pem: str) -> bool:
    """True when `document` (from `signed_head`) is signed by a certificate that chains to `anchors_pem`.

    The certificate the document carries is only a claim: trusting it alone let a head signed
    with an attacker's self-signed certificate pass (issue 21, finding 3). The path from it to a
    trust anchor (the deployment's CA plus `CREDENCE_TRUST_ANCHORS`) is checked at the signing
    time (`provenance.trust.verify_path`) before its key is used. Anything malformed is False.
    """
    import binascii

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from ..trust import UntrustedSigner, verify_path

    try:
        message = json.dumps(document["head"], sort_keys=True, separators=(",", ":")).encode()
        signed_at = dt.datetime.strptime(document["head"]["signed_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
        leaf = verify_path(document["certificate_chain"], anchors_pem, at=signed_at)
        signature = base64.b64decode(document["signature"], validate=True)
    except (UntrustedSigner, KeyError, TypeError, ValueError, binascii.Error):
        return False
    public = leaf.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        return False
    try:
        public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
