"""The audit log as a hash chain: prev_hash and row_hash on every row, the chain's head and lock row;
an index for audit search and export over generations by (created_at, id).

Existing rows are chained in id order (the append-only triggers are lifted for that one UPDATE
pass and put back exactly as revision 0001 made them). Downgrading throws the chain away, so it
refuses while the log holds rows unless forced: `credence db downgrade --force`, or
`CREDENCE_FORCE_AUDIT_DOWNGRADE=1`.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import os

import sqlalchemy as sa
from alembic import context, op

from provenance.errors import LedgerError
from provenance.ledger.audit_chain import GENESIS, row_hash

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
FORCE_VARIABLE = "CREDENCE_FORCE_AUDIT_DOWNGRADE"

_audit = sa.table("audit_log", sa.column("id", sa.Integer), sa.column("at", TZ), sa.column("actor", sa.String),
                  sa.column("action", sa.String), sa.column("subject", sa.String), sa.column("details", sa.JSON),
                  sa.column("client_id", sa.String), sa.column("key_id", sa.String),
                  sa.column("prev_hash", sa.String), sa.column("row_hash", sa.String))


def _drop_triggers(dialect: str) -> None:
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")


def _create_triggers(dialect: str) -> None:
    # The same triggers as revision 0001 (its function stays in place on PostgreSQL).
    if dialect == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log "
                       "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END")
    elif dialect == "postgresql":
        op.execute("CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
                   "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()")


def upgrade() -> None:
    # Plain ADD COLUMN (no batch rebuild): rebuilding audit_log on SQLite would drop its triggers.
    op.add_column("audit_log", sa.Column("prev_hash", sa.String(64)))
    op.add_column("audit_log", sa.Column("row_hash", sa.String(64)))
    op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("last_id", sa.Integer(), nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("updated_at", TZ),
    )
    # Audit search and export page through generations in (created_at, id) order.
    op.create_index("ix_generations_created_id", "generations", ["created_at", "id"])
    bind = op.get_bind()
    dialect = bind.dialect.name
    last_id, last_hash, count = 0, GENESIS, 0
    if bind.execute(sa.select(sa.func.count()).select_from(_audit)).scalar():
        _drop_triggers(dialect)
        after = -1
        while True:
            batch = bind.execute(sa.select(_audit).where(_audit.c.id > after).order_by(_audit.c.id).limit(2000)).all()
            if not batch:
                break
            for row in batch:
                digest = row_hash(row.id, row.at, row.actor, row.action, row.subject, row.details, row.client_id,
                                  row.key_id, last_hash)
                bind.execute(sa.update(_audit).where(_audit.c.id == row.id).values(prev_hash=last_hash,
                                                                                   row_hash=digest))
                last_id, last_hash, count = row.id, digest, count + 1
            after = batch[-1].id
        _create_triggers(dialect)
    bind.execute(sa.text("INSERT INTO audit_chain_head (id, last_id, last_hash, row_count) VALUES (1, :i, :h, :n)"),
                 {"i": last_id, "h": last_hash, "n": count})
    if dialect == "postgresql":
        # Ids are given out under the chain's lock from now on; keep the sequence past them anyway.
        op.execute("SELECT setval(pg_get_serial_sequence('audit_log', 'id'), GREATEST(COALESCE(MAX(id), 0), 1)) "
                   "FROM audit_log")


def _forced() -> bool:
    x_force = context.get_x_argument(as_dictionary=True).get("force", "")
    attribute = context.config.attributes.get("force", False)
    return bool(attribute) or x_force in ("1", "true", "yes") or os.environ.get(FORCE_VARIABLE, "") in ("1", "true")


def downgrade() -> None:
    rows = op.get_bind().execute(sa.select(sa.func.count()).select_from(_audit)).scalar() or 0
    if rows and not _forced():
        raise LedgerError(f"refusing to drop the audit log's hash chain ({rows} rows would lose their proof of "
                           f"integrity); run `credence db downgrade --force` or set {FORCE_VARIABLE}=1")
    op.drop_index("ix_generations_created_id", table_name="generations")
    op.drop_table("audit_chain_head")
    # audit_log keeps its triggers: drop the columns without rebuilding the table.
    op.drop_column("audit_log", "row_hash")
    op.drop_column("audit_log", "prev_hash")
