"""Generations as jobs: one job function, run by a queue worker or in-process, made safe by the ledger.

`run_job(generation_id)` claims a `queued` generation (compare-and-set in the ledger), runs
`pipeline.execute` and ends it. Delivery is at least once: a redelivered job that finds its row
already final does nothing; one that finds it `running` under a live lease asks to be retried
later (`JobBusy`); one whose previous run died after recording its publish finishes that publish
instead of generating again. So a generation is published at most once, whatever the queue does.

Executors (`make_executor`): with `CREDENCE_BROKER_URL` set, jobs go to Dramatiq on Redis and
`credence worker` processes run them (see `credence.worker`); without it, a small thread pool in
the API process runs the same function, so the embedded default needs nothing installed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from provenance.ledger import FINAL_STATUSES, Generation, ModerationDecision, StateConflict, states
from provenance.ledger.models import Client, as_utc, utcnow
from provenance.recovery import settle

from . import pipeline
from .runtime import Runtime

log = logging.getLogger("credence.jobs")

MAX_ATTEMPTS = states.MAX_ATTEMPTS


class JobBusy(Exception):
    """Another live process holds the generation's lease: try again once it may have expired."""


class Executor(Protocol):
    """Something that eventually runs `run_job` for a generation id."""

    def enqueue(self, generation_id: str) -> None: ...


ModeratorFor = Callable[[str | None], tuple[Any, str | None]]


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
        prompt, client_id, key_id, seed = gen.prompt, gen.client_id, gen.key_id, gen.seed
        params = dict(gen.parameters or {})
        decision = s.scalars(select(ModerationDecision).where(ModerationDecision.generation_id == generation_id,
                                                              ModerationDecision.stage == "prompt")
                             .order_by(ModerationDecision.id.desc())).first()
        prompt_decision = {"action": decision.action, "policy_version": decision.policy_version,
                           "policy_hash": decision.policy_hash} if decision else {}
    moderator, overlay = moderator_for(client_id)
    settings = runtime.settings
    options = pipeline.GenerateOptions(
        model=settings.default_model, seed=seed, frames=params.get("frames"), steps=params.get("steps"),
        height=params.get("height"), width=params.get("width"), guidance=params.get("guidance"), overwrite=True,
        client_id=client_id, key_id=key_id, overlay_hash=overlay, device=settings.device, dtype=settings.dtype,
        cpu_offload=settings.cpu_offload, vae_tiling=settings.vae_tiling)
    settings.outputs_dir.mkdir(parents=True, exist_ok=True)
    try:
        outcome = pipeline.execute(runtime, moderator, generation_id, prompt, output_path(runtime, generation_id),
                                   options, prompt_decision)
        return outcome.status
    except StateConflict:
        raise JobBusy(f"generation {generation_id}: the lease was lost mid-run") from None
    except Exception as exc:  # the row is `failed` with the reason (pipeline.execute saw to it)
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
    """Tell the client's webhook (if it has one) that its job ended."""
    from .webhooks import deliver_async

    with runtime.ledger.session() as s:
        gen = s.get(Generation, generation_id)
        if gen is None or (gen.status not in FINAL_STATUSES and gen.status != "review") or gen.client_id is None:
            return
        client = s.get(Client, gen.client_id)
        if client is None or not client.webhook_url or not client.webhook_secret:
            return
        payload = {"id": gen.id, "status": gen.status, "stage": gen.stage,
                   "finished_at": gen.finished_at.isoformat() if gen.finished_at else None,
                   "failure_reason": gen.failure_reason, "mark_id": gen.mark_hex if gen.status == "published" else None}
        url, secret = client.webhook_url, client.webhook_secret
    deliver_async(runtime, url, secret, payload, generation_id)


class InProcessExecutor:
    """No broker: a small thread pool in this process runs the jobs (one generation at a time by default)."""

    def __init__(self, runtime: Runtime, moderator_for: ModeratorFor, workers: int = 1) -> None:
        self.runtime = runtime
        self.moderator_for = moderator_for
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="credence-job")

    def enqueue(self, generation_id: str) -> None:
        """Run the job soon, in this process."""
        self.pool.submit(self._run, generation_id)

    def _run(self, generation_id: str) -> None:
        for _ in range(30):
            try:
                run_job(self.runtime, self.moderator_for, generation_id)
                return
            except JobBusy:
                threading.Event().wait(self.runtime.settings.lease_seconds / 4)
            except Exception:
                log.exception("job %s crashed", generation_id)
                return

    def requeue_waiting(self) -> int:
        """At start-up: queue again the generations a previous process accepted but never ran."""
        with self.runtime.ledger.session() as s:
            ids = s.scalars(select(Generation.id).where(Generation.status == "queued")
                            .order_by(Generation.created_at)).all()
        for generation_id in ids:
            self.enqueue(generation_id)
        return len(ids)

    def shutdown(self) -> None:
        """Stop taking jobs; running ones finish."""
        self.pool.shutdown(wait=False, cancel_futures=True)


class ModeratorCache:
    """The deployment's moderator, loaded once, and per client its stricter overlay (same heads)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._base: Any = None
        self._by_overlay: dict[str, Any] = {}
        self._lock = threading.Lock()

    def base(self) -> Any:
        """The deployment's moderator (loads the sentence model on first use)."""
        with self._lock:
            if self._base is None:
                from moderation import Moderator, load_policy

                settings = self.runtime.settings
                self._base = Moderator.load(load_policy(settings.policy_path), clip_checkpoint=settings.clip_model)
            return self._base

    def __call__(self, client_id: str | None) -> tuple[Any, str | None]:
        """(moderator, overlay hash) for a client: its overlay applied when it has one."""
        base = self.base()
        if client_id is None:
            return base, None
        with self.runtime.ledger.session() as s:
            client = s.get(Client, client_id)
            text = client.policy_overlay if client is not None else None
        if not text:
            return base, None
        from moderation import Moderator
        from moderation.frames import available_screens
        from moderation.overlay import apply_overlay, overlay_hash

        digest = overlay_hash(text)
        with self._lock:
            if digest not in self._by_overlay:
                policy = apply_overlay(base.policy, text)
                self._by_overlay[digest] = Moderator(policy, base.heads, available_screens(
                    policy, self.runtime.settings.clip_model))
            return self._by_overlay[digest], digest


def find_idempotent(runtime: Runtime, client_id: str | None, idempotency_key: str) -> Generation | None:
    """The job this client already made with this `Idempotency-Key`, if any."""
    if client_id is None:
        return None
    with runtime.ledger.session() as s:
        return s.scalars(select(Generation).where(Generation.client_id == client_id,
                                                  Generation.idempotency_key == idempotency_key)).first()


def submit(runtime: Runtime, moderator: Any, prompt: str, options: pipeline.GenerateOptions, executor: Executor,
           *, idempotency_key: str | None = None) -> tuple[Generation, Any, str, bool]:
    """Accept a generation job: screen the prompt now, record it, and queue it when it passed.

    Returns (row, decision or None, status, created). With an `idempotency_key` the client already
    used, the existing job is returned unchanged (`created` False) and nothing is queued again.
    """
    if idempotency_key is not None:
        existing = find_idempotent(runtime, options.client_id, idempotency_key)
        if existing is not None:
            return existing, None, existing.status, False
    try:
        gen, decision, status = pipeline.screen_and_create(runtime, moderator, prompt, options, start="queued",
                                                           idempotency_key=idempotency_key)
    except IntegrityError:  # the same key raced in from another request: that one won
        with runtime.ledger.session() as s:
            existing = s.scalars(select(Generation).where(Generation.client_id == options.client_id,
                                                          Generation.idempotency_key == idempotency_key)).one()
        return existing, None, existing.status, False
    if status == "queued":
        executor.enqueue(gen.id)
    else:
        notify_if_final(runtime, gen.id)
    return gen, decision, status, True
