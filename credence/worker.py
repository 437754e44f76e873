"""`credence worker`: a generation worker on Dramatiq over Redis (`credence.generation.queue`).

It loads the runtime, the moderator and the model once, recovers what a crashed predecessor
left (interrupted jobs are queued again), then takes jobs from the queue until SIGTERM or SIGINT,
and sends the webhook calls owed in the ledger's outbox (`credence.webhooks.Deliverer`).

Several workers on one machine share its cores through slot files (`credence.cpu_share`): each
sizes torch's pool before every job to its part of the cores among the workers then alive, unless
`--threads` fixes it; `--device cuda` puts slot k on GPU k (modulo the GPUs), `--device cuda:K` on K.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
from collections.abc import Callable

from .cpu_share import HostSlots, gpu_for_slot
from .generation.queue import QUEUE, QueueExecutor, attach_worker
from .runtime import ModeratorCache, Runtime
from .settings import Settings
from .webhooks import Deliverer

__all__ = ["QueueExecutor", "run_worker"]

log = logging.getLogger("credence.worker")


def pin_device(device: str | None, slot: int) -> str | None:
    """The device this worker runs on; a CUDA device is pinned through CUDA_VISIBLE_DEVICES.

    Why the environment: it must be set before CUDA initialises, and then every library in the
    process (diffusers, the watermark's torch code) sees exactly one GPU, as `cuda:0`.
    """
    if device is None or not device.startswith("cuda"):
        return device
    if ":" in device:
        index: int | None = int(device.split(":", 1)[1])
    else:
        import torch

        index = gpu_for_slot(slot, torch.cuda.device_count())
    if index is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
    return "cuda"


def run_worker(settings: Settings, concurrency: int = 1, *, preload: bool = True, threads: int | None = None,
               device: str | None = None) -> None:
    """`credence worker`: load the model once, recover, then take jobs until SIGTERM or SIGINT.

    `threads` fixes torch's intra-op threads; None sizes them before each job from the cores and
    the workers alive on this machine. `device` overrides CREDENCE_DEVICE (`cuda:K` pins a GPU).
    """
    from dramatiq import Worker

    slots = HostSlots(settings.home / "run" / "worker-slots")
    slot = slots.claim()
    chosen = pin_device(device if device is not None else settings.device, slot)
    if chosen != settings.device:
        settings = dataclasses.replace(settings, device=chosen)
    size_pool = _pool_sizer(slots, concurrency, threads)
    size_pool()
    runtime = Runtime(settings, actor="worker")
    executor = QueueExecutor(settings)
    report = runtime.recover(requeue=executor.enqueue)
    for line in report.actions + report.problems:
        log.warning("recovery: %s", line)
    moderators = ModeratorCache(runtime)
    attach_worker(runtime, moderators, before_job=size_pool)
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
    print(f"credence worker ready: {concurrency} thread(s) on queue {QUEUE!r}, slot {slot}, "
          f"device {chosen or 'auto'}, torch threads {threads or 'auto'}", flush=True)
    stop.wait()
    worker.stop(timeout=30_000)
    deliverer.stop()
    executor.shutdown()
    slots.release()


def _pool_sizer(slots: HostSlots, concurrency: int, threads: int | None) -> Callable[[], None]:
    """A callable that sets torch's intra-op threads for the next job (fixed, or this worker's share)."""
    import torch

    def size() -> None:
        wanted = threads if threads is not None else slots.share(concurrency).threads
        if torch.get_num_threads() != wanted:
            log.info("torch intra-op threads: %d", wanted)
            torch.set_num_threads(wanted)

    return size
