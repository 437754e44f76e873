"""Settings from the environment, and production signing through a chain and key or a callback."""

from __future__ import annotations

from pathlib import Path

import pytest

from credence.runtime import Runtime
from credence.settings import Settings, SettingsError
from provenance.publish import PublishRequest

from . import kms_stand_in
from .conftest import settings_for


def test_defaults(tmp_path: Path) -> None:
    s = Settings.from_env({"CREDENCE_HOME": str(tmp_path)})
    assert s.home == tmp_path.resolve()
    assert s.database_url == f"sqlite:///{tmp_path.resolve() / 'ledger.sqlite3'}"
    assert s.keys_dir == tmp_path.resolve() / "keys" and s.api_keys == ()


def test_database_url_and_api_keys(tmp_path: Path) -> None:
    s = Settings.from_env({"CREDENCE_HOME": str(tmp_path), "CREDENCE_DATABASE_URL": "postgresql+psycopg://x@h/db",
                           "CREDENCE_API_KEYS": " a1, b2 ,,"})
    assert s.database_url == "postgresql+psycopg://x@h/db" and s.api_keys == ("a1", "b2")


@pytest.mark.parametrize("env, message", [
    ({"CREDENCE_MAX_UPLOAD_BYTES": "many"}, "CREDENCE_MAX_UPLOAD_BYTES"),
    ({"CREDENCE_MAX_UPLOAD_SECONDS": "-3"}, "positive"),
    ({"CREDENCE_SIGNING_KEY": "/k.pem"}, "CREDENCE_SIGNING_CHAIN is not"),
    ({"CREDENCE_SIGNING_CHAIN": "/c.pem"}, "needs CREDENCE_SIGNING_KEY"),
    ({"CREDENCE_SIGNING_CALLBACK": "m:f"}, "needs CREDENCE_SIGNING_CHAIN"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_production_chain_and_key_from_settings(runtime: Runtime, clip: Path, tmp_path: Path) -> None:
    keys = runtime.settings.keys_dir
    settings = settings_for(runtime.settings.home, CREDENCE_SIGNING_CHAIN=keys / "signing_chain.pem",
                            CREDENCE_SIGNING_KEY=keys / "signing_key.pem")
    published = Runtime(settings).publisher.publish_file(clip, tmp_path / "a.mp4", PublishRequest("p", "m"))
    assert published.path.exists()


def test_signing_callback_for_a_kms(runtime: Runtime, clip: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    keys = runtime.settings.keys_dir
    monkeypatch.setattr(kms_stand_in, "KEY_PEM", (keys / "signing_key.pem").read_bytes())
    settings = settings_for(runtime.settings.home, CREDENCE_SIGNING_CHAIN=keys / "signing_chain.pem",
                            CREDENCE_SIGNING_CALLBACK="tests.kms_stand_in:sign")
    rt = Runtime(settings)
    assert rt.identity.key_pem is None  # the key never reaches Credence
    calls_before = len(kms_stand_in.CALLS)
    published = rt.publisher.publish_file(clip, tmp_path / "kms.mp4", PublishRequest("p", "m"))
    assert published.path.exists() and len(kms_stand_in.CALLS) > calls_before


def test_callback_that_cannot_be_imported(runtime: Runtime) -> None:
    from provenance.errors import KeyMissing

    keys = runtime.settings.keys_dir
    settings = settings_for(runtime.settings.home, CREDENCE_SIGNING_CHAIN=keys / "signing_chain.pem",
                            CREDENCE_SIGNING_CALLBACK="no.such.module:sign")
    with pytest.raises(KeyMissing, match="cannot be imported"):
        _ = Runtime(settings).identity


def test_index_folder_and_shards(tmp_path: Path) -> None:
    """The snapshot folder defaults under the home; shard URLs are a comma list of http(s) URLs."""
    from credence.settings import Settings, SettingsError

    plain = Settings.from_env({"CREDENCE_HOME": str(tmp_path)})
    assert plain.index_folder == tmp_path.resolve() / "index" and plain.index_shards == ()
    custom = Settings.from_env({"CREDENCE_HOME": str(tmp_path), "CREDENCE_INDEX_DIR": str(tmp_path / "snap"),
                                "CREDENCE_INDEX_SHARDS": "http://a:1/, http://b:2"})
    assert custom.index_folder == tmp_path / "snap" and custom.index_shards == ("http://a:1", "http://b:2")
    with pytest.raises(SettingsError, match="CREDENCE_INDEX_SHARDS"):
        Settings.from_env({"CREDENCE_HOME": str(tmp_path), "CREDENCE_INDEX_SHARDS": "shard-a:1"})
