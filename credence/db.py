"""Schema migrations of the ledger through Alembic, driven from code (no alembic.ini needed)."""

from __future__ import annotations

import os

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool, text
from sqlalchemy.exc import OperationalError

from migrations import SCRIPT_LOCATION
from provenance.errors import LedgerError


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at `migrations/` and the given database."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> str:
    """Apply revisions up to `revision`; returns the revision the database is at after."""
    try:
        command.upgrade(alembic_config(url), revision)
    except OperationalError as exc:
        raise LedgerError(f"cannot migrate {url!r}: {exc.orig}") from None
    return current_revision(url) or "base"


def downgrade(url: str, revision: str, *, force: bool = False) -> str:
    """Revert to `revision` ("base" removes every table). `force` lets revision 0005 drop the audit
    log's hash chain while the log holds rows (it refuses otherwise)."""
    cfg = alembic_config(url)
    cfg.attributes["force"] = force
    _refuse_chain_loss(cfg, url, revision, force)
    command.downgrade(cfg, revision)
    return current_revision(url) or "base"


#: The revision whose downgrade drops the audit log's hash chain (it refuses while the log holds rows).
CHAIN_REVISION = "0005"


def _refuse_chain_loss(cfg: Config, url: str, revision: str, force: bool) -> None:
    """Refuse a downgrade through revision 0005 before any revision runs.

    Why here and not only in 0005: SQLite has no transactional DDL, so the revisions above 0005
    would already be undone when 0005 refuses, leaving the ledger at a revision nobody asked for.
    """
    if force or os.environ.get("CREDENCE_FORCE_AUDIT_DOWNGRADE", "") in ("1", "true"):
        return
    current = current_revision(url)
    if current is None:
        return
    script = ScriptDirectory.from_config(cfg)
    target = None if revision == "base" else revision
    try:
        crossed = {r.revision for r in script.iterate_revisions(current, target)} - {target}
    except Exception:  # a relative or unknown target: alembic itself will say what is wrong
        return
    if CHAIN_REVISION not in crossed:
        return
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT count(*) FROM audit_log")).scalar() or 0
    finally:
        engine.dispose()
    if rows:
        raise LedgerError(f"refusing to drop the audit log's hash chain ({rows} rows would lose their proof of "
                          "integrity); run `credence db downgrade --force` or set CREDENCE_FORCE_AUDIT_DOWNGRADE=1")


def current_revision(url: str) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise LedgerError(f"cannot reach {url!r}: {exc.orig}") from None
    finally:
        engine.dispose()


def head_revision() -> str:
    """The newest revision this code ships."""
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head
