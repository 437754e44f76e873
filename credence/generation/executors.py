"""Who runs the jobs of an API process: the queue engine (`CREDENCE_BROKER_URL`) or a thread pool.

The app keeps one executor in `app.state.executor`, made on first use or at start-up by
`start_executor`; the routes, the review queue and the console reach it through `executor_for`.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import select

from provenance.ledger import Generation

from ..runtime import Runtime
from .jobs import Executor, JobBusy, run_job
from .protocols import ModeratorFor

log = logging.getLogger("credence.jobs")


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


_executor_lock = threading.Lock()


def start_executor(app: Any) -> None:
    """The job executor of this app: the queue (CREDENCE_BROKER_URL) or an in-process thread pool.

    Made once; it then recovers what a previous process left (re-queued, not failed) and, in
    process, queues again the jobs that were waiting. `app.state` holds the runtime and the
    moderators (`credence.runtime.ModeratorCache`).
    """
    state = app.state
    with _executor_lock:
        if state.executor is not None:
            return
        runtime: Runtime = state.runtime
        if runtime.settings.broker_url:
            from .queue import QueueExecutor

            executor: Any = QueueExecutor(runtime.settings)
            runtime.recover(requeue=executor.enqueue)
        else:
            executor = InProcessExecutor(runtime, state.moderators)
            runtime.recover(requeue=executor.enqueue)
            executor.requeue_waiting()
        state.executor = executor


def executor_for(app: Any) -> Executor:
    """The app's job executor, started on first use."""
    if app.state.executor is None:
        start_executor(app)
    return app.state.executor
