"""Workers on one machine share its cores (issue 26): slot files held by live processes, and the
torch pool each worker sizes from them. Real processes hold the slots, so a dead worker's share
really comes back (the kernel drops its lock)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from credence.cpu_share import HostSlots, gpu_for_slot, share_for
from credence.worker import pin_device

HOLDER = """
import sys, time
from pathlib import Path
from credence.cpu_share import HostSlots
slots = HostSlots(Path(sys.argv[1]), cpus=[0, 1])
print(slots.claim(), flush=True)
time.sleep(120)
"""


def _holder(folder: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def test_share_splits_the_cores_among_live_workers_and_jobs() -> None:
    assert share_for(2, 1).threads == 2
    assert share_for(2, 2).threads == 1
    assert share_for(16, 2, concurrency=2).threads == 4
    assert share_for(2, 5).threads == 1  # never zero: oversubscribe rather than starve


def test_a_second_worker_halves_the_first_and_its_death_gives_the_share_back(tmp_path: Path) -> None:
    mine = HostSlots(tmp_path, cpus=[0, 1])
    assert mine.claim() == 0
    assert mine.share().threads == 2
    other, index = _holder(tmp_path)
    try:
        assert index == 1
        assert mine.live() == [0, 1]
        assert mine.share().threads == 1
    finally:
        other.kill()
        other.wait()
    deadline = time.monotonic() + 10
    while mine.live() != [0] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mine.share().threads == 2
    mine.release()
    again = HostSlots(tmp_path, cpus=[0, 1])
    assert again.claim() == 0  # the lowest free slot is reused
    again.release()


def test_gpus_are_pinned_one_per_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    assert gpu_for_slot(0, 4) == 0 and gpu_for_slot(5, 4) == 1 and gpu_for_slot(3, 0) is None
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert pin_device("cuda:3", slot=0) == "cuda"
    import os

    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert pin_device("cpu", slot=2) == "cpu" and pin_device(None, slot=0) is None


def test_worker_refuses_an_unknown_device(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "credence", "worker", "--device", "tpu"], capture_output=True,
                            text=True, timeout=120, env={"CREDENCE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and "--device" in result.stderr and "Traceback" not in result.stderr
