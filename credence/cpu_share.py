"""How the generation workers on one machine share its cores (and its GPUs).

Why: torch sizes its intra-op pool to every core it may run on, and an idle pool spins. Two
workers on a 2-core machine that each keep a 2-thread pool fight for the cores and finish fewer
jobs together than one alone (measured: 8.6 vs 14.8 jobs a minute). So each worker holds a *slot*
(a file under the deployment's home, locked with `flock` for the life of the process: the kernel
drops the lock when the process dies, so a crashed worker never keeps its share) and, before
each job, sizes its pool to its part of the cores among the workers alive at that moment. A worker
started alone uses every core; a second one started beside it makes both move to half before their
next job, without a restart and without a coordinator.

An operator who wants fixed numbers passes `credence worker --threads M` (and pins GPUs with
`--device cuda:K`); without it, `--device cuda` gives slot k the GPU k modulo the GPUs present.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Slots tried at most (more workers than this on one machine share the last ones' numbers).
MAX_SLOTS = 64


def available_cpus() -> list[int]:
    """The cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


@dataclass(frozen=True)
class CpuShare:
    """One worker's part of the machine: how many intra-op threads, for how many live workers."""

    threads: int
    live_workers: int
    cpus: int


def share_for(cpus: int, live_workers: int, concurrency: int = 1) -> CpuShare:
    """Threads per running job so that every live worker's jobs together use each core once.

    At least one thread a job: more workers than cores oversubscribe rather than starve.
    """
    live = max(1, live_workers)
    threads = max(1, cpus // (live * max(1, concurrency)))
    return CpuShare(threads=threads, live_workers=live, cpus=cpus)


class HostSlots:
    """Slot files of the workers of one deployment on one machine; see the module docstring."""

    def __init__(self, folder: Path, cpus: Sequence[int] | None = None) -> None:
        self.folder = folder
        self.cpus = list(cpus) if cpus is not None else available_cpus()
        self.index: int | None = None
        self._handle: int | None = None

    def claim(self) -> int:
        """Take the lowest free slot and hold it until `release` (or the process's death)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for index in range(MAX_SLOTS):
            fd = os.open(self.folder / f"slot-{index}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self.index, self._handle = index, fd
            return index
        raise RuntimeError(f"all {MAX_SLOTS} worker slots under {self.folder} are taken")

    def live(self) -> list[int]:
        """Indices of the slots a live process holds (ours included)."""
        held = []
        for path in sorted(self.folder.glob("slot-*.lock")):
            index = int(path.stem.split("-", 1)[1])
            if index == self.index:
                held.append(index)
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.append(index)
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        return sorted(held)

    def share(self, concurrency: int = 1) -> CpuShare:
        """This worker's share now, from the slots alive at this moment."""
        return share_for(len(self.cpus), len(self.live()), concurrency)

    def release(self) -> None:
        """Give the slot back (the kernel does it too when the process ends)."""
        if self._handle is not None:
            os.close(self._handle)
            self._handle, self.index = None, None


def gpu_for_slot(slot: int, gpus: int) -> int | None:
    """The GPU a worker in `slot` takes when told `--device cuda` without an index: one per device."""
    return None if gpus <= 0 else slot % gpus
