"""Moves of the generation state machine: each one a compare-and-set on `status` in one transaction.

Whatever runs a generation (the CLI, an in-process executor, a queue worker on another machine)
only ever moves its row forward through these functions. A move names the statuses it expects
and, for a `running` row, the lease owner: if another process got there first, the UPDATE
matches no row and the caller gets `StateConflict` instead of a second publish.

A lease owner is `host:pid:token`. `owner_is_dead` lets recovery on the same host take over a
crashed process's rows at once instead of waiting for the lease to run out; on another host, or
when in doubt, it answers False and the lease's expiry decides.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, or_, update
from sqlalchemy.orm import Session

from ..errors import ProvenanceError
from .models import FINAL_STATUSES, STAGES, TRANSITIONS, Generation, utcnow
from .outbox import NOTIFIED_STATUSES, enqueue_for_generation

#: How long a lease lasts unless renewed (a queue's visibility timeout is set to match).
DEFAULT_LEASE_SECONDS = 120.0
#: Runs of one generation (each ended by a crash or a lost lease) before it is given up as `failed`.
MAX_ATTEMPTS = 3


class StateConflict(ProvenanceError):
    """The row is not in the status (or not under the lease) the move expected."""


def new_lease_owner() -> str:
    """A lease owner name for this process: host, pid and a random token (pids get reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def owner_is_dead(owner: str | None, *, this_owner: str | None = None) -> bool:
    """True only when `owner` is certainly gone: a process on this host that no longer exists.

    A zombie (killed but not yet reaped) counts as dead. The current process under another token
    (a previous incarnation that had the same pid, as in a container restarted as pid 1) is dead.
    """
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid_text, _, _token = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return this_owner is not None and owner != this_owner
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            state = handle.read().rpartition(")")[2].split()[0]
        return state in ("Z", "X")
    except (OSError, IndexError):
        return False


def lease_deadline(seconds: float) -> dt.datetime:
    """When a lease taken now for `seconds` runs out."""
    return utcnow() + dt.timedelta(seconds=seconds)


def move(session: Session, generation_id: str, expected: Iterable[str], to: str, *, owner: str | None = None,
         **fields: Any) -> None:
    """Move one row from one of `expected` to `to` (with `fields`), or raise `StateConflict`.

    For a `running` row, `owner` must hold the lease. A move to `running` takes the lease for
    `owner`; a move out of `running` gives it up. The caller commits (same unit of work as the
    rows that go with the move, including the client's webhook call in the outbox when the move
    ends the job or holds it for review).
    """
    expected = tuple(expected)
    for status in expected:
        if status in FINAL_STATUSES or to not in TRANSITIONS.get(status, frozenset()) | {status}:
            raise ValueError(f"the state machine has no move {status} -> {to}")
    stage = fields.get("stage")
    if stage is not None and stage not in STAGES.get(to, ()):
        raise ValueError(f"stage {stage!r} does not belong to status {to!r}")
    condition = and_(Generation.id == generation_id, Generation.status.in_(expected))
    if "running" in expected:
        condition = and_(condition, or_(Generation.status != "running", Generation.lease_owner == owner))
    values: dict[str, Any] = {"status": to, "updated_at": utcnow(), **fields}
    if to in FINAL_STATUSES:
        values.setdefault("finished_at", values["updated_at"])
    if to != "running":
        values.setdefault("lease_owner", None)
        values.setdefault("lease_expires_at", None)
        values.setdefault("stage", None)
    result = session.execute(update(Generation).where(condition).values(**values)
                             .execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        current = session.get(Generation, generation_id, populate_existing=True)
        if current is None:
            raise StateConflict(f"unknown generation {generation_id}")
        held = " (lease held by another process)" if current.status == "running" else ""
        raise StateConflict(f"generation {generation_id} is {current.status}{held}, "
                            f"not {' or '.join(expected)}: refusing to move it to {to}")
    if to in NOTIFIED_STATUSES:
        # The client's webhook call is owed in the same transaction as the move (see outbox).
        enqueue_for_generation(session, generation_id)


def claim(session: Session, generation_id: str, owner: str, seconds: float = DEFAULT_LEASE_SECONDS,
          *, stage: str = "generating", dead_owner: str | None = None, run: bool = True) -> None:
    """Take a `queued` row (or a `running` one whose lease expired) for `owner`: it becomes `running`.

    `dead_owner` also lets recovery take a row whose lease has not run out yet but whose owner
    `owner_is_dead` showed to be gone; the compare-and-set still fails if anyone else moved it.
    `run=False` (recovery taking a row over to clean it up) does not count as an attempt.
    """
    now = utcnow()
    expired = or_(Generation.lease_expires_at.is_(None), Generation.lease_expires_at < now)
    if dead_owner is not None:
        expired = or_(expired, Generation.lease_owner == dead_owner)
    condition = and_(Generation.id == generation_id,
                     or_(Generation.status == "queued", and_(Generation.status == "running", expired)))
    result = session.execute(update(Generation).where(condition).values(
        status="running", stage=stage, lease_owner=owner, lease_expires_at=now + dt.timedelta(seconds=seconds),
        attempts=Generation.attempts + (1 if run else 0), updated_at=now, started_at=now,
    ).execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        current = session.get(Generation, generation_id, populate_existing=True)
        state = current.status if current is not None else "unknown"
        raise StateConflict(f"generation {generation_id} is {state}: it cannot be claimed")


def renew(session: Session, generation_id: str, owner: str, seconds: float = DEFAULT_LEASE_SECONDS,
          **fields: Any) -> None:
    """Extend `owner`'s lease on a `running` row (optionally setting `stage` or other fields)."""
    stage = fields.get("stage")
    if stage is not None and stage not in STAGES["running"]:
        raise ValueError(f"stage {stage!r} does not belong to status 'running'")
    result = session.execute(update(Generation).where(
        Generation.id == generation_id, Generation.status == "running", Generation.lease_owner == owner,
    ).values(lease_expires_at=lease_deadline(seconds), updated_at=utcnow(), **fields)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        current = session.get(Generation, generation_id, populate_existing=True)
        if current is None:
            raise StateConflict(f"unknown generation {generation_id}")
        if current.status != "running":
            raise StateConflict(f"generation {generation_id} is {current.status}, not running under this process")
        raise StateConflict(f"generation {generation_id}: the lease is held by another process")
