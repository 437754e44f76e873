"""The generation state machine: queued/running/review/... with a stage, a lease and named files.

`pending` rows of the old code were publishes that never finished (nothing ever moved a row out
of `pending` except success or failure), so they become `failed` with that reason; the new
statuses map back on downgrade (queued/running -> pending, rejected/cancelled -> failed).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("stage", sa.String(16)))
        batch.add_column(sa.Column("lease_owner", sa.String(200)))
        batch.add_column(sa.Column("lease_expires_at", TZ))
        batch.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("output_path", sa.Text()))
        batch.add_column(sa.Column("temp_path", sa.Text()))
    op.create_index("ix_generations_status_lease", "generations", ["status", "lease_expires_at"])
    op.execute(
        "UPDATE generations SET status = 'failed', "
        "failure_reason = 'interrupted before it was published (a pending row from before the state machine)' "
        "WHERE status = 'pending'"
    )


def downgrade() -> None:
    op.execute("UPDATE generations SET status = 'pending' WHERE status IN ('queued', 'running')")
    op.execute("UPDATE generations SET status = 'failed' WHERE status IN ('rejected', 'cancelled')")
    op.drop_index("ix_generations_status_lease", table_name="generations")
    with op.batch_alter_table("generations") as batch:
        for column in ("temp_path", "output_path", "attempts", "lease_expires_at", "lease_owner", "stage"):
            batch.drop_column(column)
