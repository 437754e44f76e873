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
    # Webhook calls owed to clients, written in the same transaction as the state change, sent
    # under a lease by a deliverer: a crash between the change and the call loses nothing. A
    # client's webhook may reach private addresses only when an operator allowed it. And the
    # fingerprint of the request behind an Idempotency-Key: another body under the key is a 409.
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("generation_id", sa.String(36), sa.ForeignKey("generations.id"), nullable=False),
        sa.Column("client_id", sa.String(36), sa.ForeignKey("clients.id"), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TZ, nullable=False),
        sa.Column("lease_owner", sa.String(200)),
        sa.Column("lease_expires_at", TZ),
        sa.Column("delivered_at", TZ),
        sa.Column("failed_at", TZ),
        sa.Column("last_error", sa.Text()),
    )
    op.create_index("ix_webhook_outbox_generation_id", "webhook_outbox", ["generation_id"])
    op.create_index("ix_webhook_outbox_pending", "webhook_outbox", ["delivered_at", "failed_at", "next_attempt_at"])
    op.add_column("clients", sa.Column("webhook_allow_private", sa.Boolean(), nullable=False,
                                       server_default=sa.false()))
    op.add_column("generations", sa.Column("request_sha256", sa.String(64)))
    # --- end webhook outbox ---
    # --- labels and publish evidence (issue 25) ---
    # What each released file discloses, recorded when it is published: the visible label burned
    # into it (mode and the words shown; NULL for files published before labels existed) and
    # whether the signed file read back as valid, trusted and ours before it was released. The
    # compliance report counts these per period, so the period columns get indexes.
    op.add_column("published_files", sa.Column("label_mode", sa.String(16)))
    op.add_column("published_files", sa.Column("label_text", sa.String(200)))
    op.add_column("published_files", sa.Column("manifest_verified", sa.Boolean()))
    op.create_index("ix_published_files_created_at", "published_files", ["created_at"])
    op.create_index("ix_moderation_decisions_created_at", "moderation_decisions", ["created_at"])
    # --- end labels and publish evidence ---
    # --- watermark read-back (issue 22) ---
    # Whether the mark was read back at publish, from the exact released bytes and again after one
    # simulated platform re-encode (H.264 CRF 32), and with what p-value and margin (the worse of
    # the two reads), and the payload's soft-decision headroom in dB (the worse read; what passes a
    # short or small clip whose p-value stops at the CRC bound). NULL for files published before the
    # read-back existed.
    op.add_column("published_files", sa.Column("watermark_read_back", sa.Boolean()))
    op.add_column("published_files", sa.Column("watermark_read_back_p", sa.Float()))
    op.add_column("published_files", sa.Column("watermark_read_back_margin", sa.Float()))
    op.add_column("published_files", sa.Column("watermark_read_back_headroom_db", sa.Float()))
    # --- end watermark read-back ---
    pass


def downgrade() -> None:
    # --- watermark read-back (issue 22) ---
    with op.batch_alter_table("published_files") as batch:
        batch.drop_column("watermark_read_back_headroom_db")
        batch.drop_column("watermark_read_back_margin")
        batch.drop_column("watermark_read_back_p")
        batch.drop_column("watermark_read_back")
    # --- end watermark read-back ---
    # --- labels and publish evidence (issue 25) ---
    op.drop_index("ix_moderation_decisions_created_at", table_name="moderation_decisions")
    op.drop_index("ix_published_files_created_at", table_name="published_files")
    with op.batch_alter_table("published_files") as batch:
        batch.drop_column("manifest_verified")
        batch.drop_column("label_text")
        batch.drop_column("label_mode")
    # --- end labels and publish evidence ---
    # --- webhook outbox (issue 21) ---
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("request_sha256")
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("webhook_allow_private")
    op.drop_index("ix_webhook_outbox_pending", table_name="webhook_outbox")
    op.drop_index("ix_webhook_outbox_generation_id", table_name="webhook_outbox")
    op.drop_table("webhook_outbox")
    # --- end webhook outbox ---
    # --- sessions and reviewers (issue 21) ---
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("reviewer")
    op.drop_index("ix_console_sessions_expires_at", table_name="console_sessions")
    op.drop_index("ix_console_sessions_key_id", table_name="console_sessions")
    op.drop_table("console_sessions")
    # --- end sessions and reviewers ---
    pass
