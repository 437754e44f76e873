"""The ledger's unit of work: an engine, sessions, and the queries the flows need."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import LedgerError
from .audit_chain import append
from .models import Generation, PublishedFile, mark_to_db


def prompt_digest(prompt: str) -> str:
    """SHA-256 hex of the UTF-8 prompt: lets auditors find a prompt without reading them all."""
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # Foreign keys are off by default in SQLite; WAL lets the API read while the CLI writes.
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class Ledger:
    """The database of record. Construct once per process; sessions are cheap."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if url.startswith("postgresql"):
            kwargs.update(pool_pre_ping=True, pool_size=5, max_overflow=5)
        try:
            self.engine: Engine = create_engine(url, **kwargs)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise LedgerError(f"cannot use database URL {url!r}: {exc}") from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One unit of work: commits when the block ends, rolls back if it raises."""
        try:
            session = self._sessions()
        except OperationalError as exc:
            raise LedgerError(f"cannot reach the ledger: {exc.orig}") from None
        try:
            with session.begin():
                yield session
        except OperationalError as exc:
            raise LedgerError(f"ledger error: {exc.orig}") from None
        finally:
            session.close()

    def require_schema(self) -> None:
        """Fail with a clear message when the database was never migrated."""
        try:
            tables = set(inspect(self.engine).get_table_names())
        except OperationalError as exc:
            raise LedgerError(f"cannot reach the ledger at {self.engine.url!r}: {exc.orig}") from None
        if "generations" not in tables:
            raise LedgerError("the ledger has no schema; run `credence db upgrade` (or `credence init`)")

    def get_generation(self, generation_id: str) -> Generation | None:
        """The generation with this id, with its files, or None."""
        with self.session() as s:
            gen = s.get(Generation, generation_id)
            if gen is not None:
                _ = gen.files, gen.decisions
            return gen

    def find_by_mark(self, mark_id: int) -> Generation | None:
        """The generation whose watermark payload is `mark_id`, or None."""
        with self.session() as s:
            return s.scalars(select(Generation).where(Generation.mark_id_db == mark_to_db(mark_id))).first()

    def find_file_by_label(self, manifest_label: str) -> PublishedFile | None:
        """The published file whose manifest has this label, or None."""
        with self.session() as s:
            return s.scalars(select(PublishedFile).where(PublishedFile.manifest_label == manifest_label)).first()

    def audit(self, session: Session, actor: str, action: str, subject: str | None, *,
              client_id: str | None = None, key_id: str | None = None, **details: Any) -> None:
        """Append an audit entry inside the caller's unit of work, naming the client and key that caused it.

        Every entry extends the hash chain (`provenance.ledger.audit_chain`); the chain's lock is held
        until the caller's unit of work commits, so appends from several processes never interleave.
        """
        append(session, actor, action, subject, details, client_id=client_id, key_id=key_id)

    def dispose(self) -> None:
        """Close pooled connections (tests and short-lived CLIs)."""
        self.engine.dispose()
