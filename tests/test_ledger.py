"""Ledger schema: Alembic upgrade/downgrade on SQLite and PostgreSQL, and the append-only audit log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError

from credence import db
from provenance.ledger import AppendOnlyViolation, AuditEntry, Base, Generation, Ledger, mark_from_db, mark_to_db

from .conftest import postgres_schema


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A private schema in the PostgreSQL `test` database, dropped afterwards."""
    yield from postgres_schema("credence_test")


def _schema_diff(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
    finally:
        engine.dispose()


def _roundtrip(url: str) -> None:
    assert db.current_revision(url) is None
    assert db.upgrade(url) == db.head_revision()
    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"generations", "moderation_decisions", "published_files", "keys", "audit_log"} <= tables
    # The migrations and the models describe the same schema: a forgotten revision fails here.
    assert _schema_diff(url) == []
    assert db.downgrade(url, "base") == "base"
    remaining = set(inspect(create_engine(url)).get_table_names()) - {"alembic_version"}
    assert remaining == set()
    assert db.upgrade(url) == db.head_revision()


def _append_only(url: str) -> None:
    ledger = Ledger(url)
    with ledger.session() as s:
        ledger.audit(s, "test", "thing.done", "subject-1", n=1)
    with pytest.raises(AppendOnlyViolation), ledger.session() as s:
        entry = s.query(AuditEntry).one()
        entry.action = "rewritten"
    # The database refuses it too, even for SQL that bypasses the ORM.
    for statement in ("UPDATE audit_log SET action = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError), ledger.engine.begin() as conn:
            conn.execute(text(statement))
    with ledger.session() as s:
        assert s.query(AuditEntry).one().action == "thing.done"
    ledger.dispose()


def _mark_ids(url: str) -> None:
    ledger = Ledger(url)
    with ledger.session() as s:
        for mark in (0, 1, 2**63 - 1, 2**63, 2**64 - 1):
            gen = Generation(prompt="p", prompt_sha256="0" * 64, model="m", parameters={}, status="queued")
            gen.mark_id = mark
            s.add(gen)
    for mark in (0, 2**63, 2**64 - 1):
        found = ledger.find_by_mark(mark)
        assert found is not None and found.mark_id == mark
    ledger.dispose()


def test_sqlite_upgrade_downgrade(sqlite_url: str) -> None:
    _roundtrip(sqlite_url)


def test_postgres_upgrade_downgrade(postgres_url: str) -> None:
    _roundtrip(postgres_url)


def test_sqlite_audit_log_is_append_only(sqlite_url: str) -> None:
    db.upgrade(sqlite_url)
    _append_only(sqlite_url)


def test_postgres_audit_log_is_append_only(postgres_url: str) -> None:
    db.upgrade(postgres_url)
    _append_only(postgres_url)


def test_unsigned_64_bit_mark_ids_round_trip(sqlite_url: str, postgres_url: str) -> None:
    for url in (sqlite_url, postgres_url):
        db.upgrade(url)
        _mark_ids(url)


def test_mark_mapping_is_a_bijection_on_64_bits() -> None:
    for mark in (0, 5, 2**63 - 1, 2**63, 2**64 - 1):
        assert mark_from_db(mark_to_db(mark)) == mark
        assert -(2**63) <= mark_to_db(mark) < 2**63
    with pytest.raises(ValueError):
        mark_to_db(2**64)


def test_unmigrated_ledger_says_how_to_fix_it(sqlite_url: str) -> None:
    from provenance.errors import LedgerError

    with pytest.raises(LedgerError, match="credence db upgrade"):
        Ledger(sqlite_url).require_schema()
