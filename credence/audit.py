"""Search and export of what Credence did: generations with their moderation and review decisions.

Search is keyset-paginated (newest first; a cursor names the last row seen), so page N costs what
page 1 costs. Export walks the same order in batches and yields one line at a time: memory stays
flat for millions of rows, whatever reads it (a file, stdout, an HTTP streaming response).

Prompts are stored in the clear for auditors for `CREDENCE_PROMPT_RETENTION_DAYS`; after that
`redact_prompts` replaces each with `redacted:sha256:<hash>` (the hash was stored from the start,
so an auditor can still find a known prompt) and records that it did as an audit event.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Text, cast, exists, func, or_, select, tuple_, update
from sqlalchemy.sql import Select

from provenance.ledger import Generation, Ledger, ModerationDecision, mark_from_db, mark_to_db
from provenance.ledger.models import Client, utcnow

from .csvsafe import neutralise_row
from .timestamps import aware, iso

#: What a prompt becomes once its retention has passed.
REDACTED_PREFIX = "redacted:sha256:"
#: Rows read per round trip by export.
EXPORT_BATCH = 2000
#: Columns of the CSV export, in order.
CSV_COLUMNS = ("id", "created_at", "finished_at", "status", "stage", "client_id", "key_id", "model", "policy_version",
               "mark_id", "prompt_sha256", "prompt", "failure_reason", "decisions")


class SearchError(ValueError):
    """A filter or cursor that cannot be used (named in the message)."""


@dataclass(frozen=True)
class SearchFilters:
    """Every filter is optional; given ones must all hold (AND)."""

    client: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    status: str | None = None
    action: str | None = None
    stage: str | None = None
    category: str | None = None
    policy_version: str | None = None
    model: str | None = None
    mark: str | None = None
    prompt: str | None = None


@dataclass(frozen=True)
class Page:
    """One page of results and the cursor of the next (None on the last page)."""

    items: list[dict[str, Any]]
    next_cursor: str | None


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filtered(filters: SearchFilters, session: Any) -> Select[Any]:
    """The generations matching `filters` (no order, no limit)."""
    query = select(Generation)
    if filters.client:
        ids = select(Client.id).where(or_(Client.id == filters.client, Client.name == filters.client))
        query = query.where(or_(Generation.client_id == filters.client, Generation.client_id.in_(ids)))
    if filters.since:
        query = query.where(Generation.created_at >= aware(filters.since))
    if filters.until:
        query = query.where(Generation.created_at < aware(filters.until))
    if filters.status:
        query = query.where(Generation.status == filters.status)
    if filters.model:
        query = query.where(Generation.model == filters.model)
    if filters.policy_version:
        query = query.where(Generation.policy_version.like(_like_escape(filters.policy_version) + "%", escape="\\"))
    if filters.mark:
        try:
            mark = int(filters.mark, 16)
            db_mark = mark_to_db(mark)
        except ValueError:
            raise SearchError(f"mark {filters.mark!r} is not a 64-bit hex id") from None
        query = query.where(Generation.mark_id_db == db_mark)
    if filters.prompt:
        query = query.where(func.lower(Generation.prompt).like(
            "%" + _like_escape(filters.prompt.lower()) + "%", escape="\\"))
    conditions = []
    if filters.action:
        conditions.append(ModerationDecision.action == filters.action)
    if filters.stage:
        conditions.append(ModerationDecision.stage == filters.stage)
    if filters.category:
        # Reasons are JSON lists of objects; the serialised text names the category exactly so.
        conditions.append(cast(ModerationDecision.reasons, Text).like(
            '%"category": "' + _like_escape(filters.category) + '"%', escape="\\"))
    if conditions:
        query = query.where(exists(select(ModerationDecision.id).where(
            ModerationDecision.generation_id == Generation.id, *conditions)))
    return query


def encode_cursor(created_at: dt.datetime, generation_id: str) -> str:
    """The cursor that names the page after the generation (`created_at`, `generation_id`), newest first."""
    return base64.urlsafe_b64encode(f"{iso(created_at)}|{generation_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    """(created_at, generation id) of a cursor `encode_cursor` gave out; `SearchError` for any other."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, _, generation_id = text.partition("|")
        parsed = aware(dt.datetime.fromisoformat(moment))
        assert parsed is not None and generation_id
        return parsed, generation_id
    except (ValueError, AssertionError, UnicodeDecodeError):
        raise SearchError("cursor is not one this server gave out") from None


_GENERATION_COLUMNS = (Generation.id, Generation.created_at, Generation.finished_at, Generation.status,
                       Generation.stage, Generation.client_id, Generation.key_id, Generation.model,
                       Generation.policy_version, Generation.mark_id_db.label("mark_id"), Generation.prompt_sha256,
                       Generation.prompt, Generation.failure_reason)
_DECISION_COLUMNS = (ModerationDecision.generation_id, ModerationDecision.id, ModerationDecision.stage,
                     ModerationDecision.action, ModerationDecision.reasons, ModerationDecision.policy_version,
                     ModerationDecision.client_id, ModerationDecision.key_id, ModerationDecision.created_at)


def generation_dict(row: Any, decisions: list[dict[str, Any]]) -> dict[str, Any]:
    """What search and export say about one generation (a row of `_GENERATION_COLUMNS`)."""
    return {"id": row.id, "created_at": iso(row.created_at), "finished_at": iso(row.finished_at),
            "status": row.status, "stage": row.stage, "client_id": row.client_id, "key_id": row.key_id,
            "model": row.model, "policy_version": row.policy_version, "mark_id": f"{mark_from_db(row.mark_id):016x}",
            "prompt_sha256": row.prompt_sha256, "prompt": row.prompt, "failure_reason": row.failure_reason,
            "decisions": decisions}


def _with_decisions(session: Any, rows: list[Any]) -> list[dict[str, Any]]:
    """Rows read as plain tuples (no ORM objects: export reads millions), each with its decisions."""
    by_generation: dict[str, list[dict[str, Any]]] = {r.id: [] for r in rows}
    if rows:
        for d in session.execute(select(*_DECISION_COLUMNS).where(
                ModerationDecision.generation_id.in_(list(by_generation))).order_by(ModerationDecision.id)):
            by_generation[d.generation_id].append({
                "id": d.id, "stage": d.stage, "action": d.action, "reasons": d.reasons,
                "policy_version": d.policy_version, "client_id": d.client_id, "key_id": d.key_id,
                "created_at": iso(d.created_at)})
    return [generation_dict(r, by_generation[r.id]) for r in rows]


def search_generations(ledger: Ledger, filters: SearchFilters, *, limit: int = 50, cursor: str | None = None) -> Page:
    """One page of matching generations, newest first, each with its decisions."""
    if not 1 <= limit <= 10_000:
        raise SearchError(f"limit must be between 1 and 10000, got {limit}")
    with ledger.session() as s:
        query = _filtered(filters, s)
        if cursor:
            moment, generation_id = decode_cursor(cursor)
            query = query.where(tuple_(Generation.created_at, Generation.id) < tuple_(moment, generation_id))
        rows = list(s.execute(query.with_only_columns(*_GENERATION_COLUMNS)
                              .order_by(Generation.created_at.desc(), Generation.id.desc()).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        items = _with_decisions(s, rows)
        next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
    return Page(items, next_cursor)


def iter_generations(ledger: Ledger, since: dt.datetime | None, until: dt.datetime | None,
                     filters: SearchFilters | None = None) -> Iterator[dict[str, Any]]:
    """Every matching generation in [since, until), oldest first, fetched in batches (flat memory)."""
    base = SearchFilters(**{**(filters.__dict__ if filters else {}), "since": since, "until": until})
    after: tuple[dt.datetime, str] | None = None
    while True:
        with ledger.session() as s:
            query = _filtered(base, s)
            if after is not None:
                query = query.where(tuple_(Generation.created_at, Generation.id) > tuple_(after[0], after[1]))
            rows = list(s.execute(query.with_only_columns(*_GENERATION_COLUMNS)
                                  .order_by(Generation.created_at, Generation.id).limit(EXPORT_BATCH)))
            if not rows:
                return
            items = _with_decisions(s, rows)
            after = (rows[-1].created_at, rows[-1].id)
        yield from items
        if len(rows) < EXPORT_BATCH:
            return


def export_lines(ledger: Ledger, since: dt.datetime | None, until: dt.datetime | None, fmt: str,
                 filters: SearchFilters | None = None) -> Iterator[str]:
    """The export as text lines (`csv` with a header row, or `jsonl`), produced as they are read.

    CSV cells that a spreadsheet would run as formulas get a leading `'` (`credence.csvsafe`);
    JSON Lines keeps the exact text.
    """
    if fmt not in ("csv", "jsonl"):
        raise SearchError(f"format must be csv or jsonl, got {fmt!r}")
    if fmt == "jsonl":
        for item in iter_generations(ledger, since, until, filters):
            yield json.dumps(item, separators=(",", ":")) + "\n"
        return
    buffer = io.StringIO()
    # RFC 4180 line ends: a cell holding a bare CR is then quoted too (with "\n" alone it was not, and
    # a prompt with a carriage return split its row).
    writer = csv.writer(buffer, lineterminator="\r\n")

    def line(values: Any) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(values)
        return buffer.getvalue()

    yield line(CSV_COLUMNS)
    for item in iter_generations(ledger, since, until, filters):
        item = dict(item, decisions=json.dumps(item["decisions"], separators=(",", ":")))
        # Client-written text (prompts, reasons) must not run as a spreadsheet formula (credence.csvsafe).
        yield line(neutralise_row("" if item[c] is None else item[c] for c in CSV_COLUMNS))


def chunked(lines: Iterator[str], size: int = 1 << 16) -> Iterator[bytes]:
    """Lines joined into pieces of about `size` bytes: one send (and one thread hop) per piece, not per row."""
    parts: list[str] = []
    held = 0
    for line in lines:
        parts.append(line)
        held += len(line)
        if held >= size:
            yield "".join(parts).encode("utf-8")
            parts, held = [], 0
    if parts:
        yield "".join(parts).encode("utf-8")


def redact_prompts(ledger: Ledger, older_than: dt.timedelta, *, actor: str) -> int:
    """Replace the prompts of generations created before now - `older_than` by their hash; audited."""
    cutoff = utcnow() - older_than
    with ledger.session() as s:
        result = s.execute(update(Generation).where(
            Generation.created_at < cutoff, ~Generation.prompt.like(REDACTED_PREFIX + "%"),
        ).values(prompt=REDACTED_PREFIX + Generation.prompt_sha256).execution_options(synchronize_session=False))
        count = int(result.rowcount or 0)  # type: ignore[attr-defined]
        ledger.audit(s, actor, "prompts.redacted", None, count=count, cutoff=cutoff.isoformat(),
                     retention_days=older_than.total_seconds() / 86400)
    return count
