"""The ledger's tables: SQLAlchemy 2 typed models, the same on SQLite and PostgreSQL.

Every change to these classes needs an Alembic revision in `migrations/versions`; the tests
compare the migrated schema against this metadata so that a forgotten revision fails.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    event,
    false,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

#: Statuses a generation moves through (the state machine in docs/architecture.md); only
#: `published` ever has a released file at its final path.
GENERATION_STATUSES = ("queued", "running", "review", "published", "blocked", "rejected", "failed", "cancelled")

#: Statuses a generation never leaves.
FINAL_STATUSES = frozenset({"published", "blocked", "rejected", "failed", "cancelled"})

#: What `stage` may say: progress while `running`, and what was held while in `review`.
STAGES = {"running": ("generating", "screening", "publishing", "releasing"), "review": ("prompt", "output"),
          "blocked": ("prompt", "output")}

#: The moves the state machine allows, each made by a compare-and-set on `status`.
TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"running", "cancelled", "failed"}),
    "running": frozenset({"review", "published", "blocked", "failed", "queued"}),
    "review": frozenset({"queued", "running", "rejected"}),
}


def new_generation_id() -> str:
    """A random UUID4 in canonical form: hard to guess, safe to show to clients."""
    return str(uuid.uuid4())


def new_mark_id() -> int:
    """A uniformly random 64-bit id for the watermark payload (unsigned)."""
    return secrets.randbits(64)


def mark_to_db(mark_id: int) -> int:
    """Map an unsigned 64-bit mark id onto a signed BIGINT (values >= 2**63 overflow it)."""
    if not 0 <= mark_id < 1 << 64:
        raise ValueError(f"mark id {mark_id} is not a 64-bit unsigned integer")
    return mark_id - (1 << 64) if mark_id >= 1 << 63 else mark_id


def mark_from_db(value: int) -> int:
    """Inverse of `mark_to_db`."""
    return value + (1 << 64) if value < 0 else value


def utcnow() -> dt.datetime:
    """Timezone-aware now in UTC: every timestamp in the ledger is UTC."""
    return dt.datetime.now(dt.UTC)


def as_utc(moment: dt.datetime) -> dt.datetime:
    """A ledger timestamp as an aware UTC datetime (SQLite hands them back naive)."""
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


class Base(DeclarativeBase):
    """Declarative base; `type_annotation_map` keeps JSON portable across both databases."""

    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}  # noqa: RUF012


#: What an API key may be allowed to do.
SCOPES = ("generate", "verify", "moderate", "review", "audit", "admin")


class Client(Base):
    """A client application of the API: its quotas, its stricter policy overlay and its webhook."""

    __tablename__ = "clients"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_generation_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                    server_default=func.now())
    disabled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # Quotas: requests per window on every authenticated route ("60/minute"), generations per day.
    rate_limit: Mapped[str | None] = mapped_column(String(64))
    daily_generations: Mapped[int | None] = mapped_column(Integer)
    # A policy YAML that may only be stricter than the deployment's (checked when it is set).
    policy_overlay: Mapped[str | None] = mapped_column(Text)
    policy_overlay_hash: Mapped[str | None] = mapped_column(String(64))
    webhook_url: Mapped[str | None] = mapped_column(Text)
    # Needed in the clear to sign each delivery (HMAC); shown to the client once.
    webhook_secret: Mapped[str | None] = mapped_column(String(128))
    operator: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Only an operator's `--allow-private-webhook` lets deliveries reach loopback or private addresses.
    webhook_allow_private: Mapped[bool] = mapped_column(default=False, server_default=false())

    keys: Mapped[list[ApiKey]] = relationship(back_populates="client")

    @property
    def disabled(self) -> bool:
        """A disabled client's keys all answer 401."""
        return self.disabled_at is not None


class ApiKey(Base):
    """An API key: a public prefix to find its row, a hash of its secret (never the secret), scopes."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_generation_id)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                    server_default=func.now())
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # The person who holds a review key (`keys create --reviewer NAME`): approvals count people.
    reviewer: Mapped[str | None] = mapped_column(String(200))

    client: Mapped[Client] = relationship(back_populates="keys")


class Generation(Base):
    """One request to make a clip, from the prompt to its outcome."""

    __tablename__ = "generations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_generation_id)
    mark_id_db: Mapped[int] = mapped_column("mark_id", BigInteger, unique=True, index=True)
    prompt: Mapped[str] = mapped_column(Text)
    prompt_sha256: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(String(200))
    model_hash: Mapped[str | None] = mapped_column(String(64))
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seed: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    stage: Mapped[str | None] = mapped_column(String(16))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    # The lease of whoever runs the generation: only the owner moves a `running` row, and recovery
    # takes over a row only once its lease has expired (or its owner is known to be dead).
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Named before any byte is written, so that recovery knows which files are this publish's.
    output_path: Mapped[str | None] = mapped_column(Text)
    temp_path: Mapped[str | None] = mapped_column(Text)
    policy_version: Mapped[str | None] = mapped_column(String(64))
    watermark_key_id: Mapped[str | None] = mapped_column(String(64))
    client: Mapped[str | None] = mapped_column(String(200))
    client_id: Mapped[str | None] = mapped_column(String(36), index=True)
    key_id: Mapped[str | None] = mapped_column(String(36))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    # SHA-256 of the request that carried the key: the same key with another body is a 409.
    request_sha256: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                    server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                    onupdate=utcnow, server_default=func.now())

    files: Mapped[list[PublishedFile]] = relationship(back_populates="generation", cascade="all")
    decisions: Mapped[list[ModerationDecision]] = relationship(back_populates="generation")

    @property
    def mark_id(self) -> int:
        """The unsigned 64-bit payload the watermark carries."""
        return mark_from_db(self.mark_id_db)

    @mark_id.setter
    def mark_id(self, value: int) -> None:
        self.mark_id_db = mark_to_db(value)

    @property
    def mark_hex(self) -> str:
        """The mark id as 16 hex digits, the form the CLI and manifests show."""
        return f"{self.mark_id:016x}"


class ModerationDecision(Base):
    """A moderation outcome for a prompt or a generated output, with its explanation."""

    __tablename__ = "moderation_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    generation_id: Mapped[str | None] = mapped_column(ForeignKey("generations.id", ondelete="SET NULL"),
                                                      index=True)
    stage: Mapped[str] = mapped_column(String(16))  # "prompt" or "output"
    prompt_sha256: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    scores: Mapped[dict[str, Any]] = mapped_column(default=dict)
    reasons: Mapped[list[Any]] = mapped_column(default=list)
    policy_version: Mapped[str] = mapped_column(String(64))
    policy_hash: Mapped[str | None] = mapped_column(String(64))
    overlay_hash: Mapped[str | None] = mapped_column(String(64))
    client_id: Mapped[str | None] = mapped_column(String(36), index=True)
    key_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                    server_default=func.now(), index=True)

    generation: Mapped[Generation | None] = relationship(back_populates="decisions")


class PublishedFile(Base):
    """A released file and the exact C2PA manifest signed into it."""

    __tablename__ = "published_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    generation_id: Mapped[str] = mapped_column(ForeignKey("generations.id"), index=True)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    mime_type: Mapped[str] = mapped_column(String(64))
    manifest_label: Mapped[str | None] = mapped_column(String(200), index=True)
    manifest: Mapped[bytes | None] = mapped_column(LargeBinary)
    signer_fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                    server_default=func.now(), index=True)
    # What the file discloses (issue 25): the visible label burned in (mode, words shown; NULL
    # before labels existed) and whether the signed file read back valid, trusted and ours.
    label_mode: Mapped[str | None] = mapped_column(String(16))
    label_text: Mapped[str | None] = mapped_column(String(200))
    manifest_verified: Mapped[bool | None] = mapped_column()
    # Watermark read-back at publish (issue 22): the mark decoded from the released bytes and after
    # one simulated H.264 CRF 32 re-encode; the worse p-value and margin (decades below 1e-6).
    watermark_read_back: Mapped[bool | None] = mapped_column()
    watermark_read_back_p: Mapped[float | None] = mapped_column(Float)
    watermark_read_back_margin: Mapped[float | None] = mapped_column(Float)
    watermark_read_back_headroom_db: Mapped[float | None] = mapped_column(Float)

    generation: Mapped[Generation] = relationship(back_populates="files")


class Fingerprint(Base):
    """A published clip's perceptual fingerprint: per second, the hashes of several regions.

    Hashes are kept as big-endian bytes: 64-bit perceptual hashes above 2**63 overflow a signed
    BIGINT. Rows are only ever added; the match index loads those above the last id it saw.
    """

    __tablename__ = "fingerprints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    generation_id: Mapped[str] = mapped_column(ForeignKey("generations.id"), index=True)
    algorithm: Mapped[str] = mapped_column(String(80))
    seconds: Mapped[int] = mapped_column(Integer)
    regions: Mapped[int] = mapped_column(Integer)
    hashes: Mapped[bytes] = mapped_column(LargeBinary)
    informative: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                    server_default=func.now())


class KeyRecord(Base):
    """A signing certificate or watermark key the service has used (never the secret itself)."""

    __tablename__ = "keys"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # "signing" or "watermark"
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                    server_default=func.now())
    retired_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class AuditEntry(Base):
    """Append-only: who did what to which record. Updates and deletes are refused."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                            server_default=func.now(), index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(200), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    client_id: Mapped[str | None] = mapped_column(String(36))
    key_id: Mapped[str | None] = mapped_column(String(36))
    # The hash chain (provenance.ledger.audit_chain): the previous row's hash and this row's own.
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    row_hash: Mapped[str | None] = mapped_column(String(64))


class AuditChainHead(Base):
    """The audit chain's head and its lock row (always id 1): appends UPDATE it first, one at a time."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_id: Mapped[int] = mapped_column(Integer, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))
    row_count: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class ConsoleSessionRow(Base):
    """A signed-in console browser, shared by every API replica when there is no Redis (issue 21).

    Keyed by the SHA-256 of the session id (the id itself lives only in the browser's cookie);
    it names the key that signed in, never a copy of its scopes: the console asks the key's row
    again on every request, so revoking the key ends the session.
    """

    __tablename__ = "console_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(36), index=True)
    client_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    # One-shot messages for the next page ("approved; now published").
    flash: Mapped[list[Any]] = mapped_column(JSON, default=list)


class WebhookOutbox(Base):
    """A webhook call owed to a client (issue 21): written in the transaction that changes the generation.

    A deliverer (API process or worker) takes a row under a lease, sends it, and marks it
    delivered, or schedules the next try, or gives up after the retry schedule. A process that dies
    mid-delivery leaves its lease to run out (or to be taken at once when its owner is certainly
    dead), so another deliverer sends it again: at least once.
    """

    __tablename__ = "webhook_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    generation_id: Mapped[str] = mapped_column(ForeignKey("generations.id"), index=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.id"))
    event: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                    server_default=func.now())
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    failed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)


Index("ix_webhook_outbox_pending", WebhookOutbox.delivered_at, WebhookOutbox.failed_at, WebhookOutbox.next_attempt_at)
Index("ix_generations_status_lease", Generation.status, Generation.lease_expires_at)
Index("ix_generations_client_created", Generation.client_id, Generation.created_at)
# Audit search and export walk generations in (created_at, id) order, a page at a time.
Index("ix_generations_created_id", Generation.created_at, Generation.id)
Index("ix_generations_client_idempotency", Generation.client_id, Generation.idempotency_key, unique=True)
Index("ix_published_files_generation_sha", PublishedFile.generation_id, PublishedFile.sha256)


class AppendOnlyViolation(RuntimeError):
    """Code tried to change or delete an audit entry."""


@event.listens_for(Session, "before_flush")
def _refuse_audit_changes(session: Session, _ctx: object, _instances: object) -> None:
    # The database triggers (see the initial migration) refuse it too; this catches it earlier
    # with a clearer message, before a transaction is half done.
    for obj in list(session.dirty) + list(session.deleted):
        if isinstance(obj, AuditEntry):
            raise AppendOnlyViolation("the audit log is append-only")
