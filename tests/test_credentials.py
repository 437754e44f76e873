"""C2PA content credentials on real MP4 files: sign, verify, tamper, strip, and a foreign issuer."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from provenance.credentials import ManifestContent, key_callback, read_credentials, sign_manifest
from provenance.errors import SigningUnavailable, UnsupportedFormat
from provenance.keys import SigningIdentity, ensure_development_keys, load_signing_identity, trust_anchors_pem

from .conftest import shared_file


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    keys_dir = tmp_path / "keys"
    ensure_development_keys(keys_dir)
    return keys_dir


def _sign(src: Path, dst: Path, keys: Path, identity: SigningIdentity | None = None) -> bytes:
    identity = identity or load_signing_identity(keys)
    content = ManifestContent(generation_id="gen-123", title=dst.name, model_name="tiny-t2v",
                              policy_version="2026.11", watermark_alg="org.credence.wm.v1",
                              watermark_id="0123456789abcdef", watermark_key_id="wm-1")
    return sign_manifest(src, dst, content, identity, trust_pem=trust_anchors_pem(keys))


def _read(path: Path, keys: Path):
    return read_credentials(path, trust_pem=trust_anchors_pem(keys),
                            our_signers={load_signing_identity(keys).leaf_serial})


def test_sign_then_verify_is_trusted_and_ours(clip: Path, tmp_path: Path, keys: Path) -> None:
    signed = tmp_path / "signed.mp4"
    manifest = _sign(clip, signed, keys)
    assert len(manifest) > 1000
    creds = _read(signed, keys)
    assert creds.present and creds.state == "Trusted" and creds.ours
    assert creds.generation_id == "gen-123"
    assert creds.watermark_id == "0123456789abcdef"
    assert creds.codes == []
    # The signed file still plays.
    with av.open(str(signed)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 24


def test_manifest_carries_the_required_assertions(clip: Path, tmp_path: Path, keys: Path) -> None:
    import json

    import c2pa

    signed = tmp_path / "signed.mp4"
    _sign(clip, signed, keys)
    with open(signed, "rb") as f, c2pa.Reader("video/mp4", f) as reader:
        store = json.loads(reader.json())
    manifest = store["manifests"][store["active_manifest"]]
    labels = {a["label"] for a in manifest["assertions"]}
    assert {"c2pa.actions.v2", "c2pa.soft-binding", "cawg.training-mining", "org.credence.generation"} <= labels
    actions = next(a for a in manifest["assertions"] if a["label"] == "c2pa.actions.v2")["data"]["actions"]
    created = next(a for a in actions if a["action"] == "c2pa.created")
    assert created["digitalSourceType"].endswith("/trainedAlgorithmicMedia")
    assert any(a["action"] == "c2pa.watermarked" for a in actions)
    generation = next(a for a in manifest["assertions"] if a["label"] == "org.credence.generation")["data"]
    assert generation["policy_version"] == "2026.11" and generation["model"] == "tiny-t2v"


def test_one_flipped_byte_in_media_data_is_invalid(clip: Path, tmp_path: Path, keys: Path) -> None:
    signed = tmp_path / "signed.mp4"
    _sign(clip, signed, keys)
    data = bytearray(signed.read_bytes())
    mdat = data.find(b"mdat")
    assert mdat > 0
    data[mdat + 200] ^= 0xFF
    tampered = tmp_path / "tampered.mp4"
    tampered.write_bytes(bytes(data))
    creds = _read(tampered, keys)
    assert creds.present and creds.state == "Invalid"
    assert "assertion.bmffHash.mismatch" in creds.codes
    assert not creds.ours and creds.generation_id is None


def test_a_remuxed_copy_has_no_manifest(clip: Path, tmp_path: Path, keys: Path) -> None:
    signed, remuxed = tmp_path / "signed.mp4", tmp_path / "remuxed.mp4"
    _sign(clip, signed, keys)
    with av.open(str(signed)) as src, av.open(str(remuxed), "w") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = stream
            dst.mux(packet)
    creds = _read(remuxed, keys)
    assert not creds.present and creds.state is None


def test_third_party_manifest_is_valid_but_not_ours(keys: Path) -> None:
    fixture = shared_file("videos", "c2pa-fixtures", "video1.mp4")
    creds = _read(fixture, keys)
    assert creds.present and creds.state == "Valid"
    assert "signingCredential.untrusted" in creds.codes
    assert not creds.ours and creds.generation_id is None


def test_the_same_clip_without_a_manifest(keys: Path) -> None:
    creds = _read(shared_file("videos", "c2pa-fixtures", "video1_no_manifest.mp4"), keys)
    assert not creds.present


def test_mov_is_signed_too(tmp_path: Path, keys: Path) -> None:
    from .conftest import make_clip

    src = make_clip(tmp_path / "clip.mov")
    signed = tmp_path / "signed.mov"
    _sign(src, signed, keys)
    assert _read(signed, keys).state == "Trusted"


def test_callback_signer_for_kms_or_hsm(clip: Path, tmp_path: Path, keys: Path) -> None:
    dev = load_signing_identity(keys)
    assert dev.key_pem is not None
    identity = SigningIdentity(dev.chain_pem, callback=key_callback(dev.key_pem))
    signed = tmp_path / "signed.mp4"
    _sign(clip, signed, keys, identity)
    creds = _read(signed, keys)
    assert creds.state == "Trusted" and creds.ours


def test_signing_fails_closed_with_a_key_that_does_not_match(clip: Path, tmp_path: Path, keys: Path) -> None:
    other = tmp_path / "other"
    ensure_development_keys(other)
    identity = SigningIdentity(load_signing_identity(keys).chain_pem, key_pem=load_signing_identity(other).key_pem)
    with pytest.raises(SigningUnavailable):
        _sign(clip, tmp_path / "signed.mp4", keys, identity)


def test_webm_cannot_carry_a_manifest(clip: Path, tmp_path: Path, keys: Path) -> None:
    with pytest.raises(UnsupportedFormat, match="WEBM"):
        _sign(clip, tmp_path / "out.webm", keys)


def test_a_signer_from_another_ca_is_not_ours(clip: Path, tmp_path: Path, keys: Path) -> None:
    other = tmp_path / "other"
    ensure_development_keys(other)
    signed = tmp_path / "signed.mp4"
    _sign(clip, signed, other)
    creds = _read(signed, keys)  # we trust only our own CA
    assert creds.present and creds.state == "Valid" and not creds.ours and creds.generation_id is None
