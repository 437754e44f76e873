"""Generations as jobs: one job function, run by a queue worker or in-process, made safe by the ledger.

`run_job(generation_id)` claims a `queued` generation (compare-and-set in the ledger), runs
`pipeline.execute` and ends it. Delivery is at least once: a redelivered job that finds its row
already final does nothing; one that finds it `running` under a live lease asks to be retried
later (`JobBusy`); one whose previous run died after recording its publish finishes that publish
instead of generating again. So a generation is published at most once, whatever the queue does.

The executors that call it (`credence.generation.executors`): with `CREDENCE_BROKER_URL` set,
jobs go to Dramatiq on Redis and `credence worker` processes run them; without it, a small thread
pool in the API process runs the same function, so the embedded default needs nothing installed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from provenance.ledger import FINAL_STATUSES, Generation, ModerationDecision, StateConflict, states
from provenance.ledger.models import as_utc, utcnow
from provenance.recovery import settle

from ..runtime import Runtime
from .options import GenerateOptions, job_options
from .pipeline import execute, screen_and_create
from .protocols import Decision, Moderator, ModeratorFor

log = logging.getLogger("credence.jobs")

MAX_ATTEMPTS = states.MAX_ATTEMPTS


class JobBusy(Exception):
    """Another live process holds the generation's lease: try again once it may have expired."""


class Executor(Protocol):
    """Something that eventually runs `run_job` for a generation id."""

    def enqueue(self, generation_id: str) -> None: ...


def output_path(runtime: Runtime, generation_id: str) -> Path:
    """Where a job's clip is published: one name per generation, so a retry cannot make a second file."""
    return runtime.settings.outputs_dir / f"{generation_id}.mp4"


def run_job(runtime: Runtime, moderator_for: ModeratorFor, generation_id: str) -> str:
    """Run one generation to its end; returns the status it ended in (idempotent, see the module)."""
    ledger = runtime.ledger
    with ledger.session() as s:
        gen = s.get(Generation, generation_id)
        if gen is None:
            return "missing"
        status, owner, expires, attempts = gen.status, gen.lease_owner, gen.lease_expires_at, gen.attempts
    if status in FINAL_STATUSES or status == "review":
        return status
    dead = states.owner_is_dead(owner, this_owner=runtime.owner) if status == "running" else False
    if status == "running" and attempts >= MAX_ATTEMPTS and (dead or expires is None or as_utc(expires) < utcnow()):
        _give_up(runtime, generation_id, owner if dead else None, attempts)
        return "failed"
    try:
        with ledger.session() as s:
            states.claim(s, generation_id, runtime.owner, runtime.settings.lease_seconds,
                         dead_owner=owner if dead else None)
    except StateConflict:
        raise JobBusy(f"generation {generation_id} is held by another worker") from None
    published = settle(ledger, generation_id, runtime.owner, actor=runtime.actor)
    if published is not None:
        return published
    with ledger.session() as s:
        gen = s.get(Generation, generation_id)
        assert gen is not None
        prompt, options = gen.prompt, job_options(gen, runtime.settings)
        decision = s.scalars(select(ModerationDecision).where(ModerationDecision.generation_id == generation_id,
                                                              ModerationDecision.stage == "prompt")
                             .order_by(ModerationDecision.id.desc())).first()
        prompt_decision = {"action": decision.action, "policy_version": decision.policy_version,
                           "policy_hash": decision.policy_hash} if decision else {}
    moderator, options.overlay_hash = moderator_for(options.client_id)
    runtime.settings.outputs_dir.mkdir(parents=True, exist_ok=True)
    try:
        outcome = execute(runtime, moderator, generation_id, prompt, output_path(runtime, generation_id), options,
                          prompt_decision)
        return outcome.status
    except StateConflict:
        raise JobBusy(f"generation {generation_id}: the lease was lost mid-run") from None
    except Exception as exc:  # the row is `failed` with the reason (`execute` saw to it)
        log.warning("generation %s failed: %s", generation_id, exc)
        return "failed"
    finally:
        notify_if_final(runtime, generation_id)


def _give_up(runtime: Runtime, generation_id: str, dead_owner: str | None, attempts: int) -> None:
    try:
        with runtime.ledger.session() as s:
            states.claim(s, generation_id, runtime.owner, runtime.settings.lease_seconds, dead_owner=dead_owner)
            states.move(s, generation_id, ("running",), "failed", owner=runtime.owner,
                        failure_reason=f"gave up after {attempts} attempts (each worker died or lost its lease)")
            runtime.ledger.audit(s, runtime.actor, "generation.failed", generation_id, attempts=attempts)
    except StateConflict:
        return
    notify_if_final(runtime, generation_id)


def notify_if_final(runtime: Runtime, generation_id: str) -> None:
    """Wake this process's webhook deliverers: the move that ended the job (or held it) already wrote the
    client's call to the ledger's outbox, in its own transaction (`provenance.ledger.outbox`); a deliverer
    sends it (`credence.webhooks`). Without a deliverer here, another process's sends it on its next poll."""
    from ..webhooks import kick_all

    kick_all()


def find_idempotent(runtime: Runtime, client_id: str | None, idempotency_key: str) -> Generation | None:
    """The job this client already made with this `Idempotency-Key`, if any."""
    if client_id is None:
        return None
    with runtime.ledger.session() as s:
        return s.scalars(select(Generation).where(Generation.client_id == client_id,
                                                  Generation.idempotency_key == idempotency_key)).first()


class IdempotencyMismatch(StateConflict):
    """An `Idempotency-Key` the client already used, with another request body (HTTP 409)."""


def check_replay(existing: Generation, request_sha256: str | None) -> None:
    """Refuse to replay `existing` for a request whose body differs from the one that made it.

    A key names one request: answering another body with the first one's job would silently drop
    what the client asked for. Rows from before the fingerprint was recorded replay as before.
    """
    if request_sha256 is not None and existing.request_sha256 is not None \
            and existing.request_sha256 != request_sha256:
        raise IdempotencyMismatch(f"this Idempotency-Key was already used with a different request body "
                                  f"(generation {existing.id}); use a new key for a new request")


def submit(runtime: Runtime, moderator: Moderator, prompt: str, options: GenerateOptions, executor: Executor,
           *, idempotency_key: str | None = None, request_sha256: str | None = None,
           ) -> tuple[Generation, Decision | None, str, bool]:
    """Accept a generation job: screen the prompt now, record it, and queue it when it passed.

    Returns (row, decision or None, status, created). With an `idempotency_key` the client already
    used, the existing job is returned unchanged (`created` False) and nothing is queued again;
    with another request body than that job's (`request_sha256`) it is `IdempotencyMismatch`.
    """
    if idempotency_key is not None:
        existing = find_idempotent(runtime, options.client_id, idempotency_key)
        if existing is not None:
            check_replay(existing, request_sha256)
            return existing, None, existing.status, False
    try:
        gen, decision, status = screen_and_create(runtime, moderator, prompt, options, start="queued",
                                                  idempotency_key=idempotency_key, request_sha256=request_sha256)
    except IntegrityError:  # the same key raced in from another request: that one won
        with runtime.ledger.session() as s:
            existing = s.scalars(select(Generation).where(Generation.client_id == options.client_id,
                                                          Generation.idempotency_key == idempotency_key)).one()
        check_replay(existing, request_sha256)
        return existing, None, existing.status, False
    if status == "queued":
        executor.enqueue(gen.id)
    else:
        notify_if_final(runtime, gen.id)
    return gen, decision, status, True
