"""Publish reads the watermark back (issue 22): from the released bytes and after a simulated re-encode.

A clip whose mark cannot be read is never published: the fault below blurs every frame after it is
marked (what a broken pipeline stage between the embedder and the encoder would do), the read-back
fails, the one re-mark at the next strength step is blurred too, and the generation fails with the
reason: no file at the final path, no published-file row.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import func, select

from credence.runtime import Runtime
from provenance.ledger import Generation, PublishedFile
from provenance.publish import Publisher, PublishRequest, WatermarkSpec
from provenance.readback import MARGIN_DECADES, FrameSpool, WatermarkUnreadable
from provenance.watermark import ALGORITHM, WatermarkEmbedder, WatermarkKey, ecc
from provenance.watermark.readback import (
    DECODE_AMPLITUDE,
    HEADROOM_DB,
    STRONG_HEADROOM_DB,
    KeyedReadBack,
    headroom_db,
    stronger_embedder,
)

from .conftest import make_clip

REQUEST = PublishRequest(prompt="a red circle moving left on a blue background", model_name="external")


def test_published_row_records_the_read_back(runtime: Runtime, clip: Path, tmp_path: Path) -> None:
    published = runtime.publisher.publish_file(clip, tmp_path / "out.mp4", REQUEST)
    with runtime.ledger.session() as s:
        row = s.scalars(select(PublishedFile).where(PublishedFile.generation_id == published.generation_id)).one()
        assert row.watermark_read_back is True
        assert row.watermark_read_back_margin is not None and row.watermark_read_back_p is not None
        assert row.watermark_read_back_headroom_db is not None
        # Passed with something to spare on both reads: the payload's headroom, and the sync's p-value
        # margin unless the headroom is strong enough to stand in for it.
        assert row.watermark_read_back_headroom_db >= HEADROOM_DB and row.watermark_read_back_p < 1e-6
        assert row.watermark_read_back_margin >= MARGIN_DECADES or row.watermark_read_back_headroom_db >= \
            STRONG_HEADROOM_DB


class _BlurAfter:
    """The fault: a marker whose frames are blurred after the mark is in (sigma 3: the mark's cells are gone)."""

    def __init__(self, inner: WatermarkEmbedder, calls: list[int]) -> None:
        self.inner, self.calls = inner, calls

    def embed(self, frame: np.ndarray, index: int) -> np.ndarray:
        if index == 0:
            self.calls.append(1)
        return cv2.GaussianBlur(self.inner.embed(frame, index), (0, 0), 3.0)


def test_a_mark_destroyed_after_embedding_is_never_published(runtime: Runtime, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "in.mp4", frames=48, width=320, height=240)
    secret = runtime.watermark.read_back.key  # type: ignore[union-attr]
    key = WatermarkKey(secret.key_id, secret.secret)
    markers: list[int] = []
    spec = WatermarkSpec(ALGORITHM, key.key_id, lambda m: _BlurAfter(WatermarkEmbedder(key, m), markers),
                         read_back=KeyedReadBack(key),
                         make_stronger=lambda m: _BlurAfter(stronger_embedder(key, m), markers))
    publisher = Publisher(runtime.ledger, runtime.identity, trust_pem=runtime.trust_pem, watermark=spec)
    out = tmp_path / "out.mp4"
    with pytest.raises(WatermarkUnreadable, match="could not be read back before release \\(twice\\)"):
        publisher.publish_file(clip, out, REQUEST)
    assert len(markers) == 2  # marked, read back, re-marked one step stronger, read back again
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".credence-")] == []
    with runtime.ledger.session() as s:
        assert (s.scalar(select(func.count()).select_from(PublishedFile)) or 0) == 0
        [gen] = s.scalars(select(Generation)).all()
        assert gen.status == "failed" and "WatermarkUnreadable" in (gen.failure_reason or "")
        assert "payload could not be decoded" in (gen.failure_reason or "") or "headroom" in (gen.failure_reason or "")


def test_frame_spool_replays_in_order_from_memory_and_disk() -> None:
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(7)]
    spool = FrameSpool(limit=3 * frames[0].nbytes)  # three in memory, four spilled to the temporary file
    assert all(a is b for a, b in zip(spool.through(frames), frames, strict=True))
    replayed = list(spool.replay())
    assert len(replayed) == 7 and all(np.array_equal(a, b) for a, b in zip(replayed, frames, strict=True))
    spool.close()


def test_headroom_measures_the_soft_values_against_the_decoders_need() -> None:
    """0 dB at the decoder's half-way amplitude, +6 dB at twice it, None for the wrong codeword's sign."""
    rng = np.random.default_rng(5)
    mark = int(rng.integers(0, 2**63))
    signs = 1 - 2 * ecc.encode(mark).astype(np.float64)
    noise = rng.normal(0, 1, (400, signs.size))
    at = [float(np.median([headroom_db(a * signs + n, mark) for n in noise]))  # type: ignore[misc]
          for a in (DECODE_AMPLITUDE, 2 * DECODE_AMPLITUDE)]
    assert abs(at[0]) < 0.6 and abs(at[1] - 6.0) < 0.8
    assert headroom_db(-2 * signs + noise[0], mark) is None  # anti-correlated: no headroom to speak of
    assert headroom_db(None, mark) is None
    # And the amplitude is where the real list decoder starts to decode: about half at 0 dB, all at +3 dB.
    from provenance.watermark.ecc import decode
    half = np.mean([decode(DECODE_AMPLITUDE * signs + n) == mark for n in noise[:40]])
    plus3 = np.mean([decode(DECODE_AMPLITUDE * 10 ** (3 / 20) * signs + n) == mark for n in noise[40:80]])
    assert 0.2 <= half <= 0.8 and plus3 >= 0.95
