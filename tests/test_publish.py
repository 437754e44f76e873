"""Publishing fails closed: no released file without a verified manifest and a committed record."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import func, select

from credence.runtime import Runtime
from provenance.errors import InvalidVideo, KeyMissing, OutputNotWritable, SigningUnavailable, UnsupportedFormat
from provenance.keys import SigningIdentity, ensure_development_keys, load_signing_identity
from provenance.ledger import AuditEntry, Generation, PublishedFile
from provenance.publish import Publisher, PublishRequest, file_sha256

from .conftest import make_clip, settings_for

REQUEST = PublishRequest(prompt="a red circle moving left on a blue background", model_name="external")


def _counts(rt: Runtime) -> tuple[int, int]:
    with rt.ledger.session() as s:
        return (s.scalar(select(func.count()).select_from(Generation)) or 0,
                s.scalar(select(func.count()).select_from(PublishedFile)) or 0)


def test_publish_records_everything(runtime: Runtime, clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    published = runtime.publisher.publish_file(clip, out, REQUEST)
    assert out.exists() and published.path == out
    assert published.sha256 == file_sha256(out)
    gen = runtime.ledger.get_generation(published.generation_id)
    assert gen is not None and gen.status == "published"
    assert gen.prompt == REQUEST.prompt and len(gen.prompt_sha256) == 64
    assert gen.mark_id == published.mark_id
    [record] = gen.files
    assert record.sha256 == published.sha256 and record.size_bytes == out.stat().st_size
    assert record.manifest and record.manifest_label and record.signer_fingerprint
    with runtime.ledger.session() as s:
        actions = [a.action for a in s.scalars(select(AuditEntry).where(AuditEntry.subject == gen.id))]
    assert actions == ["generation.created", "generation.published"]
    # No temporary leftovers beside the output.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["clip.mp4", "out.mp4", "home"])


@pytest.mark.parametrize("case", ["missing", "not_video", "truncated", "empty", "tiny"])
def test_bad_input_leaves_no_file_and_no_row(runtime: Runtime, tmp_path: Path, case: str) -> None:
    src = tmp_path / "in.mp4"
    if case == "not_video":
        src.write_text("this is not a video\n" * 50)
    elif case == "truncated":
        full = make_clip(tmp_path / "full.mp4", frames=48)
        src.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    elif case == "empty":
        src.write_bytes(b"")
    elif case == "tiny":
        make_clip(src, width=32, height=32)
    out = tmp_path / "out.mp4"
    before = _counts(runtime)
    with pytest.raises(InvalidVideo):
        runtime.publisher.publish_file(src, out, REQUEST)
    assert not out.exists()
    assert _counts(runtime) == before


def test_webm_output_is_refused_before_any_work(runtime: Runtime, clip: Path, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFormat):
        runtime.publisher.publish_file(clip, tmp_path / "out.webm", REQUEST)
    assert _counts(runtime) == (0, 0)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_unwritable_output_folder(runtime: Runtime, clip: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(OutputNotWritable):
        runtime.publisher.publish_file(clip, locked / "out.mp4", REQUEST)


def test_missing_output_folder_and_existing_output(runtime: Runtime, clip: Path, tmp_path: Path) -> None:
    with pytest.raises(OutputNotWritable, match="does not exist"):
        runtime.publisher.publish_file(clip, tmp_path / "nope" / "out.mp4", REQUEST)
    existing = tmp_path / "exists.mp4"
    existing.write_bytes(b"keep me")
    with pytest.raises(OutputNotWritable, match="already exists"):
        runtime.publisher.publish_file(clip, existing, REQUEST)
    assert existing.read_bytes() == b"keep me"
    assert _counts(runtime) == (0, 0)


def test_signing_failure_releases_nothing_and_marks_the_row_failed(runtime: Runtime, clip: Path,
                                                                     tmp_path: Path) -> None:
    other = tmp_path / "other-keys"
    ensure_development_keys(other)
    ours = runtime.identity
    broken = SigningIdentity(ours.chain_pem, key_pem=load_signing_identity(other).key_pem)
    publisher = Publisher(runtime.ledger, broken, trust_pem=runtime.trust_pem, watermark=runtime.watermark)
    out = tmp_path / "out.mp4"
    with pytest.raises(SigningUnavailable):
        publisher.publish_file(clip, out, REQUEST)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.mp4")]
    with runtime.ledger.session() as s:
        gen = s.scalars(select(Generation)).one()
        assert gen.status == "failed" and "SigningUnavailable" in (gen.failure_reason or "")
        assert s.scalar(select(func.count()).select_from(PublishedFile)) == 0


def test_a_signer_that_verifies_as_someone_else_is_refused(runtime: Runtime, clip: Path, tmp_path: Path) -> None:
    # A valid signature under a CA the verifier does not trust: signed, but not "ours".
    other = tmp_path / "other-keys"
    ensure_development_keys(other)
    publisher = Publisher(runtime.ledger, load_signing_identity(other), trust_pem=runtime.trust_pem)
    out = tmp_path / "out.mp4"
    with pytest.raises(SigningUnavailable, match="does not verify as ours"):
        publisher.publish_file(clip, out, REQUEST)
    assert not out.exists()


def test_missing_signing_key_is_a_clear_error(home: Path, clip: Path, tmp_path: Path) -> None:
    rt = Runtime(settings_for(home))
    rt.init()
    (home / "keys" / "signing_key.pem").unlink()
    with pytest.raises(KeyMissing, match="signing key"):
        _ = Runtime(settings_for(home)).publisher
    assert not (tmp_path / "out.mp4").exists()


def test_init_is_idempotent_and_never_overwrites(home: Path) -> None:
    rt = Runtime(settings_for(home))
    first = rt.init()
    assert "signing_key.pem" in first["created"]
    key_before = (home / "keys" / "signing_key.pem").read_bytes()
    second = Runtime(settings_for(home)).init()
    assert second["created"] == []
    assert (home / "keys" / "signing_key.pem").read_bytes() == key_before
    assert oct((home / "keys" / "signing_key.pem").stat().st_mode & 0o777) == "0o600"


def test_incomplete_ca_is_refused_not_regenerated(home: Path) -> None:
    Runtime(settings_for(home)).init()
    (home / "keys" / "ca.pem").unlink()
    with pytest.raises(KeyMissing, match="incomplete"):
        Runtime(settings_for(home)).init()
