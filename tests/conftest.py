"""Shared fixtures: a temporary CREDENCE_HOME with keys and a migrated ledger, and real clips."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from credence.runtime import Runtime
from credence.settings import Settings
from tests.support import LiveServer, make_clip

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


API_KEY = "test-key-0123456789"


@pytest.fixture
def live_server(runtime: Runtime) -> Iterator[LiveServer]:
    """The Credence app for `runtime`'s home, served by uvicorn; API key `API_KEY`."""
    from credence.app import create_app

    settings = settings_for(runtime.settings.home, CREDENCE_API_KEYS=API_KEY, CREDENCE_MAX_UPLOAD_BYTES=50_000_000)
    with LiveServer(create_app(settings)) as server:
        yield server


def postgres_schema(prefix: str) -> Iterator[str]:
    """A private schema in the PostgreSQL `test` database, dropped afterwards (skip where unreachable)."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    try:
        admin = create_engine(POSTGRES_URL)
        with admin.connect() as conn:
            conn.execute(text("select 1"))
    except (OperationalError, ImportError) as exc:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc.__class__.__name__}")
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
