"""Helpers the tests and the benchmarks share: real clips, a live uvicorn server, attacks and a bulk ledger.

The one part of tests/ that bench/ imports (bench/ imports nothing else of tests/); never installed.
Importing this package is cheap: numpy and PyAV only (the attacks live in `tests.support.attacks`, the
bulk-inserted ledger in `tests.support.bulk_ledger`).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from provenance.video import write_video

__all__ = ["LiveServer", "make_clip", "process_state", "start_worker", "stop_process"]


def make_clip(path: Path, *, frames: int = 24, width: int = 256, height: int = 192, fps: float = 24.0,
              seed: int = 0, **options: object) -> Path:
    """A textured moving clip written with PyAV (smooth random blobs drifting right over a gradient).

    The blobs are a random colour every 16 px, bilinearly interpolated: texture for the
    fingerprints and a picture the watermark can be read back from (issue 22: publishing refuses a
    clip whose mark does not read). Sharp random 8 px blocks, what this drew before, put all their
    energy at the mark's own cell scale; the publish read-back rightly refused them.
    """
    rng = np.random.default_rng(seed)
    cell, span = 16, width + frames + 1
    base = rng.integers(0, 256, (height // cell + 2, span // cell + 2, 3)).astype(np.float32)
    fy, fx = np.arange(height) / cell, np.arange(span) / cell
    y0, x0 = fy.astype(np.int64), fx.astype(np.int64)
    wy, wx = (fy - y0)[:, None, None], (fx - x0)[None, :, None]
    rows = base[y0] * (1 - wy) + base[y0 + 1] * wy
    big = rows[:, x0] * (1 - wx) + rows[:, x0 + 1] * wx
    ys, xs = np.mgrid[0:height, 0:width]
    gradient = ((xs + ys) % 256).astype(np.float32)[..., None]

    def frame(i: int) -> np.ndarray:
        return np.clip(big[:, i: i + width] * 0.5 + gradient * 0.5, 0, 255).astype(np.uint8)

    write_video(path, (frame(i) for i in range(frames)), fps, **options)
    return path


class LiveServer:
    """A real uvicorn server on a loopback port, in a background thread."""

    def __init__(self, app: object) -> None:
        import socket
        import threading

        import uvicorn

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        import time

        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def process_state(pid: int) -> str:
    """The state letter of a process in /proc (`R`, `S`, `T` stopped, `Z` zombie), or "gone"."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"


def start_worker(env: dict[str, str], *, timeout: float = 300) -> subprocess.Popen:
    """A real `credence worker` process, returned once it says it is ready (its output kept drained)."""
    proc = subprocess.Popen([sys.executable, "-m", "credence", "worker"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "worker ready" in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc
        if not line and proc.poll() is not None:
            raise RuntimeError(f"the worker exited with {proc.returncode}")
    proc.kill()
    raise RuntimeError("the worker did not get ready")


def stop_process(proc: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM, then SIGKILL if it does not end in `timeout` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
