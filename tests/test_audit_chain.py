"""The audit log's hash chain on SQLite and PostgreSQL: verified intact, then one row edited, one
deleted and one inserted through raw SQL (triggers lifted the way an intruder with the owner's
password would), each named by `verify` and by `credence audit verify` (exit 1, `row <id>`);
concurrent appends from several connections; the 0005 backfill and its guarded downgrade."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from credence import db
from provenance.audit_chain import GENESIS, row_hash, signed_head, verify, verify_signed_head
from provenance.ledger import Ledger

from .conftest import POSTGRES_URL


def _postgres_schema() -> Iterator[str]:
    try:
        admin = create_engine(POSTGRES_URL)
        with admin.connect() as conn:
            conn.execute(text("select 1"))
    except (OperationalError, ImportError) as exc:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc.__class__.__name__}")
    schema = f"credence_chain_{uuid.uuid4().hex[:10]}"
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated ledger on each database."""
    if request.param == "sqlite":
        address = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
        db.upgrade(address)
        yield address
        return
    for address in _postgres_schema():
        db.upgrade(address)
        yield address


def _fill(url: str, rows: int = 12) -> Ledger:
    ledger = Ledger(url)
    for i in range(rows):
        with ledger.session() as s:
            ledger.audit(s, "test", "thing.done", f"subject-{i}", client_id="c1", key_id="k1", n=i,
                         nested={"b": [1, 2], "a": "é"})
    return ledger


def _raw(url: str, statement: str, **params: object) -> None:
    """Run SQL with the append-only triggers lifted, as someone with the database owner's rights could."""
    engine = create_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER audit_log_no_update"))
            conn.execute(text("DROP TRIGGER audit_log_no_delete"))
        else:
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        conn.execute(text(statement), params)
    engine.dispose()


def _cli_verify(url: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CREDENCE_HOME=str(home), CREDENCE_DATABASE_URL=url)
    return subprocess.run([sys.executable, "-m", "credence", "audit", "verify"], env=env, capture_output=True,
                          text=True, timeout=120)


def test_intact_chain_verifies_and_cli_exits_0(url: str, tmp_path: Path) -> None:
    ledger = _fill(url)
    report = verify(ledger.engine)
    assert report.ok and report.rows == 12 and report.head_id == 12, report
    result = _cli_verify(url, tmp_path / "home")
    assert result.returncode == 0 and "intact: 12 rows" in result.stdout, result.stdout + result.stderr
    ledger.dispose()


@pytest.mark.parametrize("tamper", ["edit", "delete", "insert_out_of_order", "insert_rehashed"])
def test_tampering_is_named(url: str, tamper: str, tmp_path: Path) -> None:
    ledger = _fill(url)
    assert verify(ledger.engine).ok
    if tamper == "edit":
        _raw(url, "UPDATE audit_log SET actor = 'someone-else' WHERE id = 5")
        row, word = 5, "edited"
    elif tamper == "delete":
        _raw(url, "DELETE FROM audit_log WHERE id = 7")
        row, word = 7, "deleted"
    elif tamper == "insert_out_of_order":
        # A row appended claiming to follow row 3 (its hash right for that claim).
        with ledger.engine.connect() as conn:
            prev = conn.execute(text("SELECT row_hash FROM audit_log WHERE id = 3")).scalar_one()
        import datetime as dt

        at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        digest = row_hash(13, at, "intruder", "thing.done", "x", {}, None, None, prev)
        _raw(url, "INSERT INTO audit_log (id, at, actor, action, subject, details, prev_hash, row_hash) "
                  "VALUES (13, :at, 'intruder', 'thing.done', 'x', '{}', :prev, :h)", at=at, prev=prev, h=digest)
        row, word = 13, "inserted"
    else:
        # A perfectly chained row appended past the head: only the recorded head gives it away.
        with ledger.engine.connect() as conn:
            prev = conn.execute(text("SELECT row_hash FROM audit_log WHERE id = 12")).scalar_one()
        import datetime as dt

        at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        digest = row_hash(13, at, "intruder", "thing.done", "x", {}, None, None, prev)
        _raw(url, "INSERT INTO audit_log (id, at, actor, action, subject, details, prev_hash, row_hash) "
                  "VALUES (13, :at, 'intruder', 'thing.done', 'x', '{}', :prev, :h)", at=at, prev=prev, h=digest)
        row, word = 13, "inserted"
    report = verify(ledger.engine)
    assert not report.ok and report.row == row and word in (report.problem or ""), report
    if not (url.startswith("sqlite") or tamper == "edit"):
        ledger.dispose()
        return  # the command is the same code; once per kind on SQLite (and once on PostgreSQL) keeps CI short
    result = _cli_verify(url, tmp_path / "home")
    assert result.returncode == 1 and f"row {row}" in result.stdout, result.stdout + result.stderr
    ledger.dispose()


def test_concurrent_appends_are_serialised(url: str) -> None:
    """Eight writers on their own connections append at once; the chain has no fork and no gap."""
    ledger = Ledger(url)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        own = Ledger(url)  # its own engine and pool, as another process would have
        try:
            for i in range(15):
                with own.session() as s:
                    own.audit(s, f"writer-{n}", "thing.done", f"{n}-{i}")
        except BaseException as exc:
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    report = verify(ledger.engine)
    assert report.ok and report.rows == 120 and report.head_id == 120, report
    ledger.dispose()


def test_signed_head_verifies_and_a_changed_head_does_not(runtime: object) -> None:
    rt = runtime
    with rt.ledger.session() as s:  # type: ignore[attr-defined]
        rt.ledger.audit(s, "test", "thing.done", None)  # type: ignore[attr-defined]
    document = signed_head(rt.ledger.engine, rt.identity)  # type: ignore[attr-defined]
    assert verify_signed_head(document) and document["head"]["last_hash"] != GENESIS
    forged = json.loads(json.dumps(document))
    forged["head"]["rows"] += 1
    assert not verify_signed_head(forged)


def test_migration_backfills_the_chain_keeps_triggers_and_guards_downgrade(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    db.upgrade(url, "0004")
    engine = create_engine(url)
    with engine.begin() as conn:
        for i in range(1, 6):
            conn.execute(text("INSERT INTO audit_log (id, at, actor, action, subject, details) "
                              f"VALUES ({i * 2}, CURRENT_TIMESTAMP, 'old', 'thing.done', 's{i}', '{{\"n\": {i}}}')"))
    db.upgrade(url)
    ledger = Ledger(url)
    with ledger.session() as s:
        ledger.audit(s, "new", "thing.done", "after")
    report = verify(ledger.engine)
    assert report.ok and report.rows == 6 and report.head_id == 11, report
    with pytest.raises(DBAPIError), engine.begin() as conn:  # the triggers are back
        conn.execute(text("UPDATE audit_log SET actor = 'x'"))
    monkeypatch.delenv("CREDENCE_FORCE_AUDIT_DOWNGRADE", raising=False)
    with pytest.raises(RuntimeError, match="--force"):
        db.downgrade(url, "0004")
    assert db.current_revision(url) == db.head_revision()
    monkeypatch.setenv("CREDENCE_FORCE_AUDIT_DOWNGRADE", "1")
    assert db.downgrade(url, "0004") == "0004"
    engine.dispose()
    ledger.dispose()
