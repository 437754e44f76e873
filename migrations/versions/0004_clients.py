"""Clients and API keys; who caused every generation, decision and audit entry; jobs' timings.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "clients",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("disabled_at", TZ),
        sa.Column("rate_limit", sa.String(64)),
        sa.Column("daily_generations", sa.Integer()),
        sa.Column("policy_overlay", sa.Text()),
        sa.Column("policy_overlay_hash", sa.String(64)),
        sa.Column("webhook_url", sa.Text()),
        sa.Column("webhook_secret", sa.String(128)),
        sa.Column("operator", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("client_id", sa.String(36), sa.ForeignKey("clients.id"), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False, unique=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("last_used_at", TZ),
        sa.Column("revoked_at", TZ),
        sa.Column("expires_at", TZ),
    )
    op.create_index("ix_api_keys_client_id", "api_keys", ["client_id"])
    # Plain ADD COLUMN (no batch rebuild): rebuilding audit_log on SQLite would drop its triggers.
    for table in ("generations", "moderation_decisions", "audit_log"):
        op.add_column(table, sa.Column("client_id", sa.String(36)))
        op.add_column(table, sa.Column("key_id", sa.String(36)))
    op.add_column("generations", sa.Column("idempotency_key", sa.String(200)))
    op.add_column("generations", sa.Column("started_at", TZ))
    op.add_column("generations", sa.Column("finished_at", TZ))
    op.add_column("moderation_decisions", sa.Column("overlay_hash", sa.String(64)))
    op.create_index("ix_generations_client_id", "generations", ["client_id"])
    op.create_index("ix_moderation_decisions_client_id", "moderation_decisions", ["client_id"])
    op.create_index("ix_generations_client_created", "generations", ["client_id", "created_at"])
    op.create_index("ix_generations_client_idempotency", "generations", ["client_id", "idempotency_key"],
                    unique=True)


def downgrade() -> None:
    op.drop_index("ix_generations_client_idempotency", table_name="generations")
    op.drop_index("ix_generations_client_created", table_name="generations")
    op.drop_index("ix_moderation_decisions_client_id", table_name="moderation_decisions")
    op.drop_index("ix_generations_client_id", table_name="generations")
    with op.batch_alter_table("moderation_decisions") as batch:
        for column in ("overlay_hash", "key_id", "client_id"):
            batch.drop_column(column)
    with op.batch_alter_table("generations") as batch:
        for column in ("finished_at", "started_at", "idempotency_key", "key_id", "client_id"):
            batch.drop_column(column)
    # audit_log keeps its triggers: drop the columns without rebuilding it where the database allows.
    for column in ("key_id", "client_id"):
        op.drop_column("audit_log", column)
    op.drop_index("ix_api_keys_client_id", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("clients")
