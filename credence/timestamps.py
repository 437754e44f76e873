"""Ledger timestamps as the service shows them: aware, in UTC, ISO 8601.

SQLite hands timestamps back naive (they were written in UTC); PostgreSQL hands them back aware.
Every JSON answer, export and cursor writes them through `iso`, so they read the same whatever
the database.
"""

from __future__ import annotations

import datetime as dt


def aware(moment: dt.datetime) -> dt.datetime:
    """`moment` as an aware datetime in UTC (a naive one is taken to be UTC already)."""
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def iso(moment: dt.datetime | None) -> str | None:
    """`moment` in ISO 8601, in UTC with its offset (`+00:00`); None stays None."""
    return aware(moment).isoformat() if moment is not None else None
