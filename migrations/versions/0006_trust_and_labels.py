"""Trust and disclosure: server-side console sessions and reviewers (issue 21), the webhook outbox
(issue 21), visible labels and publish-time evidence on published files (issues 25 and 22).

One revision for the work of one stop; each section below is owned by one change and says why.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    # --- sessions and reviewers (issue 21) ---
    # Console sessions that every replica shares (when there is no Redis): keyed by the hash of the
    # session id, naming the key that signed in (re-checked on every request). And the person who
    # holds a review key, so that the two-reviewer rule counts people, not keys.
    op.create_table(
        "console_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(36), nullable=False),
        sa.Column("client_id", sa.String(36), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
        sa.Column("flash", sa.JSON(), nullable=False),
    )
    op.create_index("ix_console_sessions_key_id", "console_sessions", ["key_id"])
    op.create_index("ix_console_sessions_expires_at", "console_sessions", ["expires_at"])
    op.add_column("api_keys", sa.Column("reviewer", sa.String(200)))
    # --- end sessions and reviewers ---
    # --- webhook outbox (issue 21) ---
    # --- end webhook outbox ---
    # --- labels and publish evidence (issue 25) ---
    # --- end labels and publish evidence ---
    pass


def downgrade() -> None:
    # --- labels and publish evidence (issue 25) ---
    # --- end labels and publish evidence ---
    # --- webhook outbox (issue 21) ---
    # --- end webhook outbox ---
    # --- sessions and reviewers (issue 21) ---
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("reviewer")
    op.drop_index("ix_console_sessions_expires_at", table_name="console_sessions")
    op.drop_index("ix_console_sessions_key_id", table_name="console_sessions")
    op.drop_table("console_sessions")
    # --- end sessions and reviewers ---
    pass
