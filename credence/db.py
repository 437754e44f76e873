"""Schema migrations of the ledger through Alembic, driven from code (no alembic.ini needed)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool
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
    command.downgrade(cfg, revision)
    return current_revision(url) or "base"


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
