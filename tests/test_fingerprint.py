"""Fingerprints: imagehash-compatible hashes, robustness to edits, no match for unrelated or flat
clips, the 0002 migration, and an index that sees a clip published a moment ago."""

from __future__ import annotations

from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import create_engine, inspect

from credence import db
from credence.runtime import Runtime
from detector.fingerprint_source import is_strong
from provenance.fingerprint import (
    ClipFingerprint,
    QueryFingerprint,
    fingerprint_frames,
    hamming,
    hash_regions,
    query_fingerprint,
)
from provenance.index import FingerprintIndex, index_for
from provenance.ledger.models import Fingerprint
from provenance.publish import PublishRequest
from provenance.video import iter_frames, write_video
from tests.support.attacks import apply_attack


def scene_frames(seed: int, *, width: int = 256, height: int = 192, frames: int = 36) -> list[np.ndarray]:
    """A smooth random scene panning slowly (3 s at 12 fps): texture at every scale, like footage."""
    rng = np.random.default_rng(seed)
    field = (rng.random((6, 8, 3)) * 255).astype(np.uint8)
    big = np.asarray(Image.fromarray(field).resize((width * 2, height * 2), Image.Resampling.BICUBIC))
    detail = rng.integers(0, 40, (height * 2, width * 2, 1), dtype=np.uint8)
    big = np.clip(big.astype(np.int16) + detail - 20, 0, 255).astype(np.uint8)
    return [np.ascontiguousarray(big[i * 2: i * 2 + height, i * 3: i * 3 + width]) for i in range(frames)]


def write_scene(path: Path, seed: int, **kwargs: int) -> Path:
    write_video(path, iter(scene_frames(seed, **kwargs)), 12.0, preset="veryfast")
    return path


@pytest.fixture(scope="module")
def published_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FingerprintIndex, Path]:
    """Clip A and an unrelated clip B in an index (no ledger), and A's folder."""
    folder = tmp_path_factory.mktemp("fp")
    a = write_scene(folder / "a.mp4", 1)
    b = write_scene(folder / "b.mp4", 2)
    index = FingerprintIndex()
    index.add(1, "gen-a", fingerprint_frames(iter_frames(a), 12.0))
    index.add(2, "gen-b", fingerprint_frames(iter_frames(b), 12.0))
    return a, index, folder


def test_hashes_are_imagehash_phash_and_dhash() -> None:
    grey = np.asarray(Image.fromarray(scene_frames(5)[0]).convert("L"), dtype=np.float32)
    phash, dhash = hash_regions([grey])
    image = Image.fromarray(grey.astype(np.uint8))
    assert f"{int(phash[0]):016x}" == str(imagehash.phash(image))
    # dHash compares neighbouring pixels: resampling in float (here) or uint8 (imagehash) breaks
    # near-ties differently, a bit or two at most.
    assert imagehash.hex_to_hash(f"{int(dhash[0]):016x}") - imagehash.dhash(image) <= 3


@pytest.mark.parametrize("attack", ["reencode_crf35", "scale_0.5", "crop_80", "hflip", "letterbox_15",
                                    "reframe_9x16", "webm_vp9"])
def test_fingerprint_survives_edits(published_pair: tuple[Path, FingerprintIndex, Path], attack: str) -> None:
    a, index, folder = published_pair
    edited = apply_attack(attack, a, folder / f"a-{attack}.mp4")
    matches = index.search(query_fingerprint(edited))
    assert matches and matches[0].generation_id == "gen-a", matches
    assert is_strong(matches[0]), matches[0]
    assert all(m.generation_id != "gen-b" or not is_strong(m) for m in matches)


def test_unrelated_flat_and_dark_clips_do_not_match(published_pair: tuple[Path, FingerprintIndex, Path]) -> None:
    _, index, folder = published_pair
    other = write_scene(folder / "c.mp4", 3)
    assert not any(is_strong(m) for m in index.search(query_fingerprint(other)))
    flat = folder / "flat.mp4"
    write_video(flat, (np.full((96, 128, 3), 90, np.uint8) for _ in range(24)), 12.0)
    dark = folder / "dark.mp4"
    rng = np.random.default_rng(0)
    write_video(dark, (np.clip(rng.normal(5, 2, (96, 128, 3)), 0, 255).astype(np.uint8) for _ in range(24)), 12.0)
    for path in (flat, dark):
        query = query_fingerprint(path)
        assert not query.informative.any(), path.name
        assert index.search(query) == []


def test_fingerprint_blob_round_trip_keeps_hashes_above_2_63() -> None:
    big = np.array([[2**64 - 1, 2**63, 1, 0, 2**63 + 5, 7]], dtype=np.uint64)
    fp = ClipFingerprint(big, big[:, ::-1].copy(), np.array([True]))
    back = ClipFingerprint.from_blobs(fp.hashes_blob(), fp.informative_blob(), 6)
    assert np.array_equal(back.phash, big) and np.array_equal(back.dhash, big[:, ::-1])
    with pytest.raises(ValueError, match="blob holds"):
        ClipFingerprint.from_blobs(fp.hashes_blob()[:-8], fp.informative_blob(), 6)


def test_short_and_single_frame_clips_fingerprint(tmp_path: Path) -> None:
    one = tmp_path / "one.mp4"
    write_video(one, iter(scene_frames(4, frames=1)), 12.0)
    query = query_fingerprint(one)
    assert query.phash.shape[0] == 1
    stored = fingerprint_frames(scene_frames(4, frames=1), 12.0)
    assert stored.seconds == 1
    assert isinstance(query, QueryFingerprint)


def test_migration_0002_upgrade_and_downgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    assert db.upgrade(url, "0001") == "0001"
    assert "fingerprints" not in inspect(create_engine(url)).get_table_names()
    assert db.upgrade(url, "0002") == "0002"  # later revisions exist; this one is about 0002
    engine = create_engine(url)
    assert "fingerprints" in inspect(engine).get_table_names()
    columns = {c["name"] for c in inspect(engine).get_columns("fingerprints")}
    assert {"generation_id", "algorithm", "seconds", "regions", "hashes", "informative"} <= columns
    engine.dispose()
    assert db.downgrade(url, "0001") == "0001"
    assert "fingerprints" not in inspect(create_engine(url)).get_table_names()


@pytest.mark.slow
def test_publish_records_fingerprint_and_index_sees_it_at_once(runtime: Runtime, tmp_path: Path) -> None:
    index = index_for(runtime.ledger)
    index.refresh()  # built before the publish, as in a running service
    source = write_scene(tmp_path / "src.mp4", 11)
    clip = runtime.publisher.publish_file(source, tmp_path / "out.mp4", PublishRequest(prompt="p", model_name="m"))
    with runtime.ledger.session() as s:
        row = s.query(Fingerprint).filter_by(generation_id=clip.generation_id).one()
        assert row.seconds == 3 and len(row.hashes) == 2 * 8 * 3 * row.regions
    edited = apply_attack("crop_80", clip.path, tmp_path / "cropped.mp4")
    matches = index.search(query_fingerprint(edited))
    assert matches and matches[0].generation_id == clip.generation_id and is_strong(matches[0])


def test_sampled_query_skips_frames_and_hashes_like_the_full_decode(tmp_path: Path) -> None:
    """The upload's sampled decode (B-frames skipped) hashes within a few bits of a full decode."""
    import av

    from provenance.fingerprint import query as fingerprint

    path = tmp_path / "long.mp4"
    frames = scene_frames(21, width=320, height=240, frames=72)
    write_video(path, iter(frames + frames[::-1]), 24.0, preset="veryfast")  # 6 s, H.264 with B-frames
    decoded = {}
    for sampled in (True, False):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if sampled:
                stream.codec_context.skip_frame = fingerprint.SAMPLED_DECODE
            decoded[sampled] = sum(1 for _ in container.decode(stream))
    assert decoded[True] < 0.8 * decoded[False]  # the decoder really skips frames
    fast, full = query_fingerprint(path), query_fingerprint(path, sampled=False)
    assert np.array_equal(fast.times, full.times)
    assert np.median(hamming(fast.phash, full.phash)) <= 6


def test_the_sampled_decode_of_a_published_clip_is_exact(tmp_path: Path) -> None:
    """Every frame the sampled decode gives equals the full decode's frame at that time.

    The publisher's own x264 settings (B-pyramid: some B-frames are references for later P-frames)
    made the old B-frame skip conceal: 39 of 43 sampled frames differed. Skipping only the
    frames nothing references cannot change any other frame.
    """
    import av

    from provenance.fingerprint import query as fingerprint

    path = tmp_path / "published.mp4"
    frames = scene_frames(24, width=320, height=240, frames=60)
    write_video(path, iter(frames + frames[::-1]), 30.0)  # the publisher's defaults
    decoded: dict[bool, dict[int, np.ndarray]] = {}
    for sampled in (True, False):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if sampled:
                stream.codec_context.skip_frame = fingerprint.SAMPLED_DECODE
            decoded[sampled] = {f.pts: f.to_ndarray(format="gray") for f in container.decode(stream)}
    assert 0 < len(decoded[True]) < 0.8 * len(decoded[False])  # it does skip frames
    for pts, grey in decoded[True].items():
        assert np.array_equal(grey, decoded[False][pts]), pts
    with av.open(str(path)) as container:  # and the old skip did not hold on this file (the defect)
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "BIDIR"
        bidir = {f.pts: f.to_ndarray(format="gray") for f in container.decode(stream)}
    assert any(not np.array_equal(g, decoded[False][pts]) for pts, g in bidir.items())


def test_a_clip_too_thin_for_sampling_is_decoded_in_full(tmp_path: Path) -> None:
    """A 4 fps clip leaves too few frames once B-frames are skipped: all of them are decoded."""
    from provenance.fingerprint import query as fingerprint

    path = tmp_path / "slow.mp4"
    write_video(path, iter(scene_frames(22, frames=12)), 4.0, preset="veryfast")
    frames = list(fingerprint._frames_for_query(path, None, sampled=True))
    assert len(frames) == len(list(fingerprint._grey_frames(path, None, sampled=False)))


def test_an_h265_reencode_whose_sampled_decode_stops_early_is_decoded_in_full(tmp_path: Path) -> None:
    """x265's B-pyramid: skipping B-frames leaves half a second of a 3 s clip; the guard sees the gap.

    (Issue 24: a CRF 32 H.265 re-encode kept 2 of 180 frames and the fingerprint got one sample.)
    """
    import av


    path = tmp_path / "h265.mp4"
    frames = scene_frames(23, width=240, height=320, frames=45)
    write_video(path, iter(frames + frames[::-1]), 30.0, codec="libx265", crf=32)  # 3 s
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "BIDIR"  # the sampled decode of the time, which skipped every B-frame
        times = [float(f.time) for f in container.decode(stream)]
    assert times and times[-1] < 1.5, times  # what skipping B-frames alone leaves (the bug's cause)
    query = query_fingerprint(path)
    full = query_fingerprint(path, sampled=False)
    assert query.times.size == full.times.size >= 11  # every quarter second of the 3 s clip
    assert np.median(hamming(query.phash, full.phash)) <= 6


def test_mirrored_query_hashes_equal_hashing_the_flipped_regions() -> None:
    """The query's flipped variants come from flipping the resized regions: bit for bit the same hashes."""
    from provenance.fingerprint.hashing import QUERY_SCALES, content_box, hash_regions, query_hashes, region

    rng = np.random.default_rng(5)
    for h, w in ((144, 256), (256, 144), (97, 211)):
        grey = (rng.random((h, w)) * 255).astype(np.float32)
        top, bottom, left, right = content_box(grey)
        content = grey[top:bottom, left:right]
        regions = [region(content, None, s) for s in QUERY_SCALES]
        regions += [region(content, "top", 1.0), region(content, "bottom", 1.0)]
        direct = hash_regions(regions + [np.ascontiguousarray(r[:, ::-1]) for r in regions])
        phash, dhash, _ = query_hashes(grey)
        assert np.array_equal(phash, direct[0]) and np.array_equal(dhash, direct[1])
