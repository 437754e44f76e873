"""`credence worker`: a generation worker on Dramatiq over Redis (`credence.generation.queue`).

It loads the runtime, the moderator and the model once, recovers what a crashed predecessor
left (interrupted jobs are queued again), then takes jobs from the queue until SIGTERM or SIGINT,
and sends the webhook calls owed in the ledger's outbox (`credence.webhooks.Deliverer`).
"""

from __future__ import annotations

import logging
import signal
import threading

from .generation.queue import QUEUE, QueueExecutor, attach_worker
from .runtime import ModeratorCache, Runtime
from .settings import Settings
from .webhooks import Deliverer

__all__ = ["QueueExecutor", "run_worker"]

log = logging.getLogger("credence.worker")


def run_worker(settings: Settings, concurrency: int = 1, *, preload: bool = True) -> None:
    """`credence worker`: load the model once, recover, then take jobs until SIGTERM or SIGINT."""
    from dramatiq import Worker

    runtime = Runtime(settings, actor="worker")
    executor = QueueExecutor(settings)
    report = runtime.recover(requeue=executor.enqueue)
    for line in report.actions + report.problems:
        log.warning("recovery: %s", line)
    moderators = ModeratorCache(runtime)
    attach_worker(runtime, moderators)
    if preload:
        from .generation.options import GenerateOptions
        from .generation.pipeline import load_model

        moderators.base()
        load_model(settings.default_model, None, GenerateOptions.for_deployment(settings))
    worker = Worker(executor.broker, queues={QUEUE}, worker_threads=concurrency, worker_timeout=500)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker.start()
    # The webhook calls this worker's jobs owe (and any other process left in the outbox).
    deliverer = Deliverer(runtime.ledger, actor="worker").start()
    print(f"credence worker ready: {concurrency} thread(s) on queue {QUEUE!r}", flush=True)
    stop.wait()
    worker.stop(timeout=30_000)
    deliverer.stop()
    executor.shutdown()
