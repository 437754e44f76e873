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
    # --- end sessions and reviewers ---
    pass
