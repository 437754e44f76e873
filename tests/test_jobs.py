"""Generation jobs on a real Redis with real `credence worker` processes, and the job function's guarantees."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from credence.generation import jobs, pipeline
from credence.runtime import ModeratorCache, Runtime
from provenance.ledger import Generation, PublishedFile
from tests.support import process_state, start_worker, stop_process

from .conftest import settings_for

REDIS_URL = os.environ.get("CREDENCE_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
PROMPT = "a red circle moving left on a blue background"


def _redis() -> None:
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.flushdb()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {exc}")


@pytest.fixture
def queued_home(home: Path) -> Iterator[Runtime]:
    """A home with a ledger, settings that point at the test Redis, and short leases (4 s)."""
    _redis()
    rt = Runtime(settings_for(home, CREDENCE_BROKER_URL=REDIS_URL, CREDENCE_LEASE_SECONDS=4))
    rt.init()
    yield rt
    rt.ledger.dispose()


def _worker(home: Path, *extra_env: tuple[str, str]) -> subprocess.Popen:
    env = {**os.environ, "CREDENCE_HOME": str(home), "CREDENCE_BROKER_URL": REDIS_URL, "CREDENCE_LEASE_SECONDS": "4"}
    env.pop("CREDENCE_DATABASE_URL", None)
    env.update(dict(extra_env))
    return start_worker(env, timeout=180)


def _status(rt: Runtime, generation_id: str) -> str:
    return rt.ledger.get_generation(generation_id).status


def _wait_status(rt: Runtime, generation_id: str, wanted: set[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _status(rt, generation_id)
        if status in wanted:
            return status
        time.sleep(0.25)
    raise AssertionError(f"generation {generation_id} still {_status(rt, generation_id)} after {timeout} s")


def _submit(rt: Runtime, **options: object) -> str:
    from credence.generation.queue import QueueExecutor

    executor = QueueExecutor(rt.settings)
    moderator = ModeratorCache(rt)
    gen, _decision, status, created = jobs.submit(rt, moderator.base(), PROMPT,
                                                  pipeline.GenerateOptions(seed=1, steps=2, **options), executor)
    executor.shutdown()
    assert status == "queued" and created
    return gen.id


@pytest.mark.slow
def test_a_worker_killed_mid_generation_leaves_the_job_to_another(queued_home: Runtime) -> None:
    rt = queued_home
    first = _worker(rt.settings.home, ("CREDENCE_FAULT_POINT", "generating"))
    try:
        generation_id = _submit(rt)
        deadline = time.monotonic() + 120
        while _status(rt, generation_id) != "running" or process_state(first.pid) != "T":
            assert time.monotonic() < deadline, "the first worker never reached the fault point"
            time.sleep(0.1)
        os.kill(first.pid, signal.SIGKILL)  # mid-generation, holding the lease and the unacked message
        first.wait(timeout=30)
        killed_at = time.monotonic()
        second = _worker(rt.settings.home)
        try:
            assert _wait_status(rt, generation_id, {"published", "failed"}, timeout=120) == "published"
            took = time.monotonic() - killed_at
        finally:
            stop_process(second)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    with rt.ledger.session() as s:
        files = s.scalars(select(PublishedFile).where(PublishedFile.generation_id == generation_id)).all()
        gen = s.get(Generation, generation_id)
        assert len(files) == 1 and Path(files[0].path).is_file() and gen.attempts == 2
    outputs = [p for p in rt.settings.outputs_dir.iterdir() if p.suffix == ".mp4" or p.name.startswith(".")]
    assert outputs == [Path(files[0].path)]
    assert took < 120
    from detector import verify

    verdict = verify(Path(files[0].path), rt.verification)
    assert verdict.verdict == "generated" and verdict.generation_id == generation_id


@pytest.mark.slow
def test_run_job_is_idempotent_and_publishes_once(runtime: Runtime) -> None:
    moderators = ModeratorCache(runtime)

    class Collect:
        def __init__(self) -> None:
            self.ids: list[str] = []

        def enqueue(self, generation_id: str) -> None:
            self.ids.append(generation_id)

    queue = Collect()
    gen, _d, status, created = jobs.submit(runtime, moderators.base(), PROMPT,
                                           pipeline.GenerateOptions(seed=1, steps=2, client_id="c1"), queue,
                                           idempotency_key="k1")
    assert status == "queued" and created and queue.ids == [gen.id]
    again, _d, _s, created = jobs.submit(runtime, moderators.base(), PROMPT,
                                         pipeline.GenerateOptions(seed=1, steps=2, client_id="c1"), queue,
                                         idempotency_key="k1")
    assert again.id == gen.id and not created and queue.ids == [gen.id]
    assert jobs.run_job(runtime, moderators, gen.id) == "published"
    # A redelivered message finds the row final and does nothing.
    assert jobs.run_job(runtime, moderators, gen.id) == "published"
    with runtime.ledger.session() as s:
        assert s.scalar(select(func.count()).select_from(PublishedFile)
                        .where(PublishedFile.generation_id == gen.id)) == 1
    blocked, _d, status, _c = jobs.submit(runtime, moderators.base(), "a naked child in a bedroom",
                                          pipeline.GenerateOptions(client_id="c1"), queue)
    assert status == "blocked" and blocked.id not in queue.ids
