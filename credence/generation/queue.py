"""Generation jobs on Dramatiq over Redis: the actor, the broker, and the API side that enqueues.

Why Dramatiq (docs/architecture.md says more): a message is acknowledged only when the actor
returns, and the unacknowledged messages of a worker whose heartbeat stopped are put back on the
queue by the surviving workers; the heartbeat timeout is set to the ledger's lease, so a killed
worker's job is re-run by another within about a lease (the issue asks for 2 minutes). Celery on
Redis redelivers only after its visibility timeout (an hour by default) and needs more knobs to
be at-least-once. Retries with backoff are actor options; `JobBusy` (the row is held by a live
lease) is the only exception retried: a failed generation is already `failed` in the ledger.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from ..runtime import ModeratorCache, Runtime
from ..settings import Settings, SettingsError
from .jobs import JobBusy, run_job

log = logging.getLogger("credence.worker")

QUEUE = "generations"
ACTOR = "credence_generate"
#: Requeue of dead workers' messages happens on about one fetch in this many (Dramatiq's default, 1000,
#: can leave a killed worker's job waiting for many minutes on a quiet queue).
MAINTENANCE_CHANCE = 20


class _State:
    runtime: Runtime | None = None
    moderators: ModeratorCache | None = None
    before_job: Callable[[], None] | None = None


_state = _State()


def attach_worker(runtime: Runtime, moderators: ModeratorCache, *,
                  before_job: Callable[[], None] | None = None) -> None:
    """Make this process a worker: the actor runs its jobs with this runtime and these moderators.

    `before_job` runs before each job (the worker sizes its torch pool there: `credence.cpu_share`).
    """
    _state.runtime, _state.moderators, _state.before_job = runtime, moderators, before_job


def _run(generation_id: str) -> None:
    """The actor: run one job in this worker (the runtime and moderators were loaded at start)."""
    assert _state.runtime is not None and _state.moderators is not None, "not a credence worker"
    if _state.before_job is not None:
        _state.before_job()
    status = run_job(_state.runtime, _state.moderators, generation_id)
    log.info("generation %s: %s", generation_id, status)


def _retry_when(retries: int, exc: BaseException) -> bool:
    return isinstance(exc, JobBusy) and retries < 40


def make_broker(settings: Settings) -> RedisBroker:
    """The Redis broker of `CREDENCE_BROKER_URL`, its heartbeat matched to the ledger's lease."""
    if not settings.broker_url:
        raise SettingsError("CREDENCE_BROKER_URL is not set (a Redis URL, e.g. redis://127.0.0.1:6379/0)")
    return RedisBroker(url=settings.broker_url, namespace="credence",
                       heartbeat_timeout=int(settings.lease_seconds * 1000), maintenance_chance=MAINTENANCE_CHANCE)


def declare_actor(broker: RedisBroker) -> Any:
    """The generation actor on `broker` (the same declaration on the API side and in workers)."""
    return dramatiq.actor(_run, broker=broker, actor_name=ACTOR, queue_name=QUEUE, retry_when=_retry_when,
                          min_backoff=1000, max_backoff=30000, time_limit=6 * 3600 * 1000)


class QueueExecutor:
    """The API side: enqueue generation jobs for the workers."""

    def __init__(self, settings: Settings) -> None:
        self.broker = make_broker(settings)
        self.actor = declare_actor(self.broker)

    def enqueue(self, generation_id: str) -> None:
        """Put the job on the queue (a Redis write; the caller's transaction has committed)."""
        self.actor.send(generation_id)

    def shutdown(self) -> None:
        """Close the broker's connections."""
        self.broker.close()
