"""Shared fixtures: a temporary CREDENCE_HOME with keys and a migrated ledger, and real clips."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from credence.runtime import Runtime
from credence.settings import Settings
from provenance.video import write_video

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
POSTGRES_URL = os.environ.get("CREDENCE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def shared_file(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} absent (../shared/data is not in this checkout)")
    return path


def make_clip(path: Path, *, frames: int = 24, width: int = 256, height: int = 192, fps: float = 24.0,
              seed: int = 0, **options: object) -> Path:
    """A textured moving clip written with PyAV (random blocks drifting right)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 2, 3), dtype=np.uint8)
    big = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))
    ys, xs = np.mgrid[0:height, 0:width]
    gradient = ((xs + ys) % 256).astype(np.uint8)[..., None]

    def frame(i: int) -> np.ndarray:
        tile = big[:height, i % 8: i % 8 + width]
        return (tile // 2 + gradient // 2).astype(np.uint8)

    write_video(path, (frame(i) for i in range(frames)), fps, **options)
    return path


def settings_for(home: Path, **overrides: object) -> Settings:
    """Settings for a private CREDENCE_HOME (SQLite ledger inside it unless overridden)."""
    env = {"CREDENCE_HOME": str(home)}
    env.update({k: str(v) for k, v in overrides.items()})
    return Settings.from_env(env)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty CREDENCE_HOME."""
    return tmp_path / "home"


@pytest.fixture
def runtime(home: Path) -> Iterator[Runtime]:
    """A runtime after `credence init`: keys and a migrated SQLite ledger."""
    rt = Runtime(settings_for(home))
    rt.init()
    yield rt
    rt.ledger.dispose()


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    """A 1 s 256x192 H.264 MP4."""
    return make_clip(tmp_path / "clip.mp4")


@pytest.fixture
def cli_env(home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for running the real `credence` CLI against a private home."""
    monkeypatch.setenv("CREDENCE_HOME", str(home))
    monkeypatch.delenv("CREDENCE_DATABASE_URL", raising=False)
    env = dict(os.environ)
    env["CREDENCE_HOME"] = str(home)
    return env


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


API_KEY = "test-key-0123456789"


@pytest.fixture
def live_server(runtime: Runtime) -> Iterator[LiveServer]:
    """The Credence app for `runtime`'s home, served by uvicorn; API key `API_KEY`."""
    from credence.app import create_app

    settings = settings_for(runtime.settings.home, CREDENCE_API_KEYS=API_KEY, CREDENCE_MAX_UPLOAD_BYTES=50_000_000)
    with LiveServer(create_app(settings)) as server:
        yield server
