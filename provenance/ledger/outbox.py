"""The webhook outbox: calls owed to clients, recorded with the state change that owes them.

Delivering a webhook from the code that moved the generation (on a thread, after the commit)
loses the call whenever the process dies between the two, and a call in flight when it dies.
Here the move itself (`states.move`, or `Publisher.begin` for a row born `blocked` or held)
writes a `webhook_outbox` row in its own transaction; deliverers (`credence.webhooks`) take due
rows under a lease, send them and record the outcome. A row whose deliverer died is taken again
once its lease runs out, or at once when its owner is certainly dead (`states.owner_is_dead`):
delivery is at least once, and receivers deduplicate on the generation id and status.

Only clients with a webhook get rows. The payload is fixed when the row is written; the URL and
the signing secret are read at delivery, so a client that rotates its secret is signed with the
new one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from .models import FINAL_STATUSES, Client, Generation, WebhookOutbox, mark_from_db, utcnow

#: Statuses a client is told about: the end of its job, or that it is held for a person.
NOTIFIED_STATUSES = FINAL_STATUSES | {"review"}


def _iso(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).isoformat()


def enqueue_for_generation(session: Session, generation_id: str) -> int | None:
    """Owe the generation's client a webhook call about its current status, in the caller's transaction.

    Returns the outbox row id, or None when nothing is owed (no client, no webhook, or a status
    clients are not told about).
    """
    row = session.execute(
        select(Generation.id, Generation.status, Generation.stage, Generation.finished_at,
               Generation.failure_reason, Generation.mark_id_db, Generation.client_id,
               Client.webhook_url, Client.webhook_secret)
        .join(Client, Client.id == Generation.client_id)
        .where(Generation.id == generation_id)
    ).first()
    if row is None or row.status not in NOTIFIED_STATUSES or not row.webhook_url or not row.webhook_secret:
        return None
    payload = {"id": row.id, "status": row.status, "stage": row.stage, "finished_at": _iso(row.finished_at),
               "failure_reason": row.failure_reason,
               "mark_id": f"{mark_from_db(row.mark_id_db):016x}" if row.status == "published" else None}
    entry = WebhookOutbox(generation_id=row.id, client_id=row.client_id, event=f"generation.{row.status}",
                          payload=payload, next_attempt_at=utcnow())
    session.add(entry)
    session.flush()
    return entry.id


@dataclass(frozen=True)
class Delivery:
    """One claimed outbox row, with what sending it needs (read at claim time)."""

    id: int
    generation_id: str
    client_id: str
    event: str
    payload: dict[str, Any]
    attempts: int  # this try included
    url: str | None
    secret: str | None
    allow_private: bool


def claim_due(session: Session, owner: str, lease_seconds: float, *, limit: int = 16,
              owner_is_dead: Any = None) -> list[Delivery]:
    """Take up to `limit` due rows for `owner` (compare-and-set on each row's lease); counts the try.

    Due: neither delivered nor given up, its next try time passed, and no live lease on it (the
    lease ran out, or `owner_is_dead(lease_owner)` says its process is gone). Two deliverers that
    race for one row both expect its current lease owner; only the first UPDATE matches.
    """
    now = utcnow()
    pending = (WebhookOutbox.delivered_at.is_(None), WebhookOutbox.failed_at.is_(None),
               WebhookOutbox.next_attempt_at <= now)
    columns = (WebhookOutbox.id, WebhookOutbox.lease_owner)
    order = (WebhookOutbox.next_attempt_at, WebhookOutbox.id)
    free = or_(WebhookOutbox.lease_owner.is_(None), WebhookOutbox.lease_expires_at.is_(None),
               WebhookOutbox.lease_expires_at < now)
    candidates = list(session.execute(select(*columns).where(*pending, free).order_by(*order).limit(limit)).all())
    if owner_is_dead is not None and len(candidates) < limit:
        # Rows under a live lease whose owner is certainly gone (a crashed process on this host).
        owners = session.execute(select(WebhookOutbox.lease_owner).where(*pending, ~free).distinct()).scalars()
        dead = [owner for owner in owners if owner and owner_is_dead(owner)]
        if dead:
            candidates += session.execute(select(*columns).where(*pending, WebhookOutbox.lease_owner.in_(dead))
                                          .order_by(*order).limit(limit - len(candidates))).all()
    claimed: list[int] = []
    for row_id, lease_owner in candidates:
        same_lease = (WebhookOutbox.lease_owner.is_(None) if lease_owner is None
                      else WebhookOutbox.lease_owner == lease_owner)
        result = session.execute(
            update(WebhookOutbox)
            .where(WebhookOutbox.id == row_id, WebhookOutbox.delivered_at.is_(None),
                   WebhookOutbox.failed_at.is_(None), same_lease)
            .values(lease_owner=owner, lease_expires_at=now + dt.timedelta(seconds=lease_seconds),
                    attempts=WebhookOutbox.attempts + 1)
            .execution_options(synchronize_session=False))
        if result.rowcount == 1:  # type: ignore[attr-defined]
            claimed.append(row_id)
    return _deliveries(session, claimed)


def _deliveries(session: Session, ids: Sequence[int]) -> list[Delivery]:
    if not ids:
        return []
    rows = session.execute(
        select(WebhookOutbox.id, WebhookOutbox.generation_id, WebhookOutbox.client_id, WebhookOutbox.event,
               WebhookOutbox.payload, WebhookOutbox.attempts, Client.webhook_url, Client.webhook_secret,
               Client.webhook_allow_private)
        .join(Client, Client.id == WebhookOutbox.client_id).where(WebhookOutbox.id.in_(list(ids)))
        .order_by(WebhookOutbox.id)).all()
    return [Delivery(r.id, r.generation_id, r.client_id, r.event, dict(r.payload), r.attempts, r.webhook_url,
                     r.webhook_secret, bool(r.webhook_allow_private)) for r in rows]


def _owned(row_id: int, owner: str) -> Any:
    return and_(WebhookOutbox.id == row_id, WebhookOutbox.lease_owner == owner,
                WebhookOutbox.delivered_at.is_(None), WebhookOutbox.failed_at.is_(None))


def mark_delivered(session: Session, row_id: int, owner: str) -> bool:
    """Record a 2xx answer; False when the row is no longer this owner's (another deliverer took it)."""
    result = session.execute(update(WebhookOutbox).where(_owned(row_id, owner)).values(
        delivered_at=utcnow(), lease_owner=None, lease_expires_at=None, last_error=None)
        .execution_options(synchronize_session=False))
    return result.rowcount == 1  # type: ignore[attr-defined]


def mark_retry(session: Session, row_id: int, owner: str, after_seconds: float, error: str) -> bool:
    """Schedule the next try `after_seconds` from now and give the lease up."""
    result = session.execute(update(WebhookOutbox).where(_owned(row_id, owner)).values(
        next_attempt_at=utcnow() + dt.timedelta(seconds=after_seconds), lease_owner=None, lease_expires_at=None,
        last_error=error[:2000]).execution_options(synchronize_session=False))
    return result.rowcount == 1  # type: ignore[attr-defined]


def mark_failed(session: Session, row_id: int, owner: str, error: str) -> bool:
    """Give up on the row (the retry schedule is spent, or the URL is refused)."""
    result = session.execute(update(WebhookOutbox).where(_owned(row_id, owner)).values(
        failed_at=utcnow(), lease_owner=None, lease_expires_at=None, last_error=error[:2000])
        .execution_options(synchronize_session=False))
    return result.rowcount == 1  # type: ignore[attr-defined]


def pending_count(session: Session) -> int:
    """Rows neither delivered nor given up."""
    return int(session.execute(select(func.count(WebhookOutbox.id)).where(
        WebhookOutbox.delivered_at.is_(None), WebhookOutbox.failed_at.is_(None))).scalar_one())


__all__ = ["NOTIFIED_STATUSES", "Delivery", "claim_due", "enqueue_for_generation", "mark_delivered", "mark_failed",
           "mark_retry", "pending_count"]
