"""Alembic environment and revisions for the ledger (`credence db upgrade` applies them)."""

from pathlib import Path

#: Folder Alembic reads (`script_location`): this package itself.
SCRIPT_LOCATION = Path(__file__).resolve().parent
