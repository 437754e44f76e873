"""A large ledger in bulk, for the audit bench and the audit tests: generations, decisions, chained audit rows.

`populate` inserts with Core executemany, hashing each audit row exactly as `Ledger.audit` would
chain it, so `audit_chain.verify` accepts the result (100k rows in seconds, where the ORM takes minutes).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import uuid
from typing import Any

from sqlalchemy import insert, update

from provenance.ledger import Generation, Ledger, ModerationDecision
from provenance.ledger.audit_chain import GENESIS, row_hash
from provenance.ledger.models import AuditChainHead, AuditEntry, mark_to_db

COLOURS = ("red", "green", "blue", "yellow", "white", "magenta")
SHAPES = ("circle", "square", "triangle")
CATEGORIES = ("violence", "sexual", "self_harm", "hate", "illegal_activity", "political")
CLIENTS = tuple(str(uuid.UUID(int=i + 1)) for i in range(5))


def populate(ledger: Ledger, rows: int, *, seed: int = 0, batch: int = 5000) -> dict[str, Any]:
    """Bulk-insert `rows` generations, their prompt decisions and a chained audit row each."""
    rng = random.Random(seed)
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    marks: set[int] = set()
    prev_hash, audit_id = GENESIS, 0
    with ledger.engine.connect() as conn:
        last = conn.execute(AuditChainHead.__table__.select()).first()
        if last is not None:
            audit_id, prev_hash = last.last_id, last.last_hash
    held = 0
    for offset in range(0, rows, batch):
        gens, decisions, audits = [], [], []
        for i in range(offset, min(rows, offset + batch)):
            gid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            prompt = (f"a {rng.choice(COLOURS)} {rng.choice(SHAPES)} moving {rng.choice(('left', 'right', 'up'))} "
                      f"number {i}")
            created = start + dt.timedelta(seconds=i * (30 * 86400 / max(rows, 1)))
            roll = rng.random()
            action = "allow" if roll < 0.85 else "review" if roll < 0.95 else "block"
            status = {"allow": "published", "block": "blocked"}.get(action) or rng.choice(("review", "rejected"))
            held += status == "review"
            mark = rng.getrandbits(64)
            while mark in marks:
                mark = rng.getrandbits(64)
            marks.add(mark)
            client = rng.choice(CLIENTS)
            gens.append({"id": gid, "mark_id": mark_to_db(mark), "prompt": prompt,
                         "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest(), "model": "credence-default-t2v",
                         "parameters": {}, "status": status, "stage": "prompt" if status == "review" else None,
                         "policy_version": "2026-11-24.1+sha256:08dbf4148b60b398", "client_id": client,
                         "attempts": 0, "created_at": created, "updated_at": created})
            reasons = [] if action == "allow" else [{"category": rng.choice(CATEGORIES), "score": 0.6,
                                                     "threshold": 0.5, "action": action, "source": "classifier"}]
            decisions.append({"generation_id": gid, "stage": "prompt", "action": action, "scores": {},
                              "reasons": reasons, "policy_version": "2026-11-24.1", "client_id": client,
                              "created_at": created})
            audit_id += 1
            details = {"status": status, "model": "credence-default-t2v"}
            digest = row_hash(audit_id, created, "api", "generation.created", gid, details, client, None, prev_hash)
            audits.append({"id": audit_id, "at": created, "actor": "api", "action": "generation.created",
                           "subject": gid, "details": details, "client_id": client, "key_id": None,
                           "prev_hash": prev_hash, "row_hash": digest})
            prev_hash = digest
        with ledger.engine.begin() as conn:
            conn.execute(insert(Generation.__table__), gens)
            conn.execute(insert(ModerationDecision.__table__), decisions)
            conn.execute(insert(AuditEntry.__table__), audits)
    with ledger.engine.begin() as conn:
        conn.execute(update(AuditChainHead.__table__).where(AuditChainHead.id == 1).values(
            last_id=audit_id, last_hash=prev_hash, row_count=AuditChainHead.row_count + rows))
    return {"generations": rows, "held": held, "audit_rows": audit_id}
