"""One decode for every source, and the watermark's per-window payloads (issue 24).

Two clips are published through the real publisher (watermark, C2PA, ledger, fingerprint rows).
The shared decode (`detector.shared_decode.read_upload`) must answer as the sources' own reads
do (`detect_watermark_file`, `query_fingerprint`) on the same file; the per-window read must
name each of our parts of a compilation on its own and nothing in the foreign part.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import detector
from credence.runtime import Runtime
from detector import FingerprintSource, WatermarkSource
from detector.shared_decode import read_upload
from provenance.fingerprint import hamming, query_fingerprint
from provenance.publish import PublishedClip, PublishRequest
from provenance.video import iter_frames, write_video
from provenance.watermark import detect_watermark_file
from provenance.watermark.per_window import MAX_WINDOWS, PER_WINDOW_S, read_windows, window_plan
from tests.support.attacks import apply_attack

from .conftest import settings_for
from .test_fingerprint import scene_frames, write_scene


@dataclass
class Published:
    runtime: Runtime
    a: PublishedClip
    b: PublishedClip
    folder: Path


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    """Two unrelated 3 s clips (256x192, 12 fps) published into one ledger."""
    folder = tmp_path_factory.mktemp("shared")
    runtime = Runtime(settings_for(folder / "home"))
    runtime.init()
    clips = []
    for name, seed in (("a", 41), ("b", 42)):
        source = write_scene(folder / f"{name}-src.mp4", seed)
        clips.append(runtime.publisher.publish_file(source, folder / f"{name}.mp4",
                                                    PublishRequest(prompt=name, model_name="m")))
    yield Published(runtime, clips[0], clips[1], folder)
    runtime.ledger.dispose()


def keys_of(published: Published) -> list:
    return list(published.runtime.verification.watermark_keys)


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["published", "reencode_crf35", "h265_crf32"])
def test_the_shared_decode_answers_like_the_separate_decodes(published: Published, attack: str) -> None:
    """Same mark, payload and p-value; fingerprint hashes a few bits apart at most (the same frames).

    The published file (H.264, its mark read back at publish), a CRF 35 H.264 re-encode (B-frames
    every third or fourth frame: the sampled path) and an H.265 re-encode (decoded in full).
    Equality is what is tested: whether a re-encode of a small clip keeps a readable mark is the
    watermark's business (`bench.watermark`). A sample too thin for the fingerprint restarts both
    reads in full, at a different point (the query keeps its sampled head). (On fc0afc2's run the
    CRF 35 re-encode's hashes were bit-identical.)
    """
    path = published.a.path if attack == "published" else apply_attack(
        attack, published.a.path, published.folder / f"a-{attack}.mp4")
    keys = keys_of(published)
    shared = read_upload(path, keys)
    alone_wm = detect_watermark_file(path, keys)
    alone_fp = query_fingerprint(path)
    assert shared.watermark.detected == alone_wm.detected
    assert shared.watermark.payload == alone_wm.payload
    assert shared.watermark.p_value == pytest.approx(alone_wm.p_value, rel=1e-6, abs=1e-300)
    assert shared.fingerprint is not None and shared.fingerprint.phash.shape == alone_fp.phash.shape
    if attack == "published":
        assert shared.watermark.detected and shared.watermark.payload == published.a.mark_id
    if attack == "h265_crf32":
        assert not shared.decode["sampled"]  # H.265's B-frames are references: decoded in full
    else:
        assert shared.decode["sampled"] or shared.decode["restarted_in_full"]
    # Both reads decode exact frames (the sampled decode skips only unreferenced ones), but inside
    # the watermark's full windows the shared read picks its 12 a second among all frames: a few
    # bits apart at most. (Until the skip was BIDIR, the query's sampled decode concealed x264's
    # skipped B-pyramid references and drifted 7.5-11 bits; both are held to the full decode.)
    full = query_fingerprint(path, sampled=False)
    assert float(np.mean(shared.fingerprint.informative == alone_fp.informative)) >= 0.9

    def bits(a: object, b: object) -> float:
        both = a.informative & b.informative  # type: ignore[attr-defined]
        return float(hamming(a.phash[both], b.phash[both]).mean())  # type: ignore[attr-defined]

    assert bits(shared.fingerprint, full) <= 4.0
    assert bits(shared.fingerprint, full) <= bits(alone_fp, full) + 0.5
    # The verdict through the shared decode is the one each source gives on its own decode.
    ctx = published.runtime.verification
    together = detector.verify(path, ctx)
    apart = detector.combine([WatermarkSource().inspect(path, ctx), FingerprintSource().judge(alone_fp, ctx)])
    assert (together.verdict, together.generation_id) == (apart.verdict, apart.generation_id)
    assert together.generation_id == published.a.generation_id


def test_a_long_upload_is_read_by_looks_spread_over_the_clip(published: Published) -> None:
    """Over 12 s of H.264, the mark is read from the sampled frames of the whole clip: no full window.

    Clip A looped to 15 s and re-encoded with B-frames: the shared read takes the mark's looks
    from the frames the sampled decode gives (it decodes fewer than all), and reads A's payload
    as the file read (every frame of 4 windows of 3 s) does.
    """
    frames = list(iter_frames(published.a.path))
    looped = (frames + frames[::-1]) * 2 + frames  # 15 s at 12 fps
    path = published.folder / "long.mp4"
    write_video(path, iter(looped), 12.0, preset="veryfast")
    keys = keys_of(published)
    shared = read_upload(path, keys)
    assert shared.decode["sampled"] and shared.decode["watermark_looks"] == "spread", shared.decode
    assert shared.decode["frames_decoded"] < len(looped)
    assert shared.watermark.detected and shared.watermark.payload == published.a.mark_id
    alone = detect_watermark_file(path, keys)
    assert alone.payload == published.a.mark_id
    short = read_upload(published.a.path, keys)
    assert short.decode["watermark_looks"] == "windows"


def test_window_plan_is_fixed_by_the_duration() -> None:
    assert window_plan(None) == [] and window_plan(0.0) == []
    assert window_plan(1.0) == [(0.0, 1.0)]
    plan = window_plan(10.0)
    assert len(plan) == 5 and plan[0] == (0.0, PER_WINDOW_S) and plan[-1][1] == pytest.approx(10.0)
    assert len(window_plan(3600.0)) == MAX_WINDOWS


def montage(published: Published, name: str, foreign_s: float) -> tuple[Path, float, float]:
    """Clip A, `foreign_s` seconds of footage we never published, clip B (12 fps); A's end, B's start."""
    a = list(iter_frames(published.a.path))
    b = list(iter_frames(published.b.path))
    foreign = scene_frames(87, frames=round(12 * foreign_s))
    path = published.folder / name
    write_video(path, iter(a + foreign + b), 12.0, preset="veryfast")
    return path, len(a) / 12.0, (len(a) + len(foreign)) / 12.0


def test_per_window_payloads_name_each_part_and_nothing_foreign(published: Published) -> None:
    """A (0-3 s), 4 s foreign (3-7 s), B (7-10 s): the 4-6 s window is foreign only and names nothing."""
    path, a_end, b_start = montage(published, "montage-wide.mp4", 4.0)
    reads = read_windows(list(iter_frames(path)), keys_of(published), 12.0)
    assert [(r.start_s, r.end_s) for r in reads] == [pytest.approx(w) for w in window_plan(10.0)]
    by_payload = {r.payload for r in reads if r.detected}
    assert published.a.mark_id in by_payload and published.b.mark_id in by_payload, reads
    assert by_payload <= {published.a.mark_id, published.b.mark_id, None}
    for r in reads:
        if r.end_s <= a_end:
            assert r.payload == published.a.mark_id, r
        if r.start_s >= b_start:
            assert r.payload == published.b.mark_id, r
        if r.start_s >= a_end and r.end_s <= b_start:
            assert not r.detected and r.payload is None, r  # nothing of ours there
    # The watermark source alone places both generations on the timeline, and nothing over 4-6 s.
    verdict = detector.verify(path, published.runtime.verification, [WatermarkSource()])
    wm = verdict.evidence[0]
    named = {w["generation_id"] for w in wm.details["windows"]}
    assert named == {published.a.generation_id, published.b.generation_id}, wm.details
    segments = verdict.segments
    assert [s["generation_id"] for s in segments] == [published.a.generation_id, published.b.generation_id]
    assert segments[0]["end_s"] <= 4.0 + 1e-6 and segments[1]["start_s"] >= 6.0 - 1e-6, segments
    assert all(s["sources"] == ["watermark"] for s in segments)


def test_a_montage_gets_both_spans_from_both_sources(published: Published) -> None:
    """With every source, each span is confirmed by the watermark's windows and cut to the fingerprint's seconds."""
    path, a_end, b_start = montage(published, "montage.mp4", 2.0)
    verdict = detector.verify(path, published.runtime.verification)
    assert verdict.verdict == "generated", verdict.to_dict()
    segments = verdict.segments
    assert [s["generation_id"] for s in segments] == [published.a.generation_id, published.b.generation_id]
    first, second = segments
    assert abs(first["start_s"]) <= 0.5 and abs(first["end_s"] - a_end) <= 0.75, first
    assert abs(second["start_s"] - b_start) <= 0.75, second
    assert first["end_s"] <= a_end + 0.75 and second["start_s"] >= b_start - 0.75  # nothing of the foreign part
    assert "watermark" in first["sources"] and "watermark" in second["sources"], segments
    assert "fingerprint" in first["sources"] and "fingerprint" in second["sources"], segments


@pytest.mark.slow
def test_an_unrelated_clip_has_no_window_and_no_segment(published: Published) -> None:
    other = write_scene(published.folder / "other.mp4", 88)
    verdict = detector.verify(other, published.runtime.verification)
    assert verdict.verdict == "not_generated" and verdict.segments == [], verdict.to_dict()
    wm = next(e for e in verdict.evidence if e.source == "watermark")
    assert not wm.details["detected"] and "windows" not in wm.details


def test_console_verify_page_shows_the_disclosure() -> None:
    """Issue 25's leftover: the verify page says what the clip discloses (label, manifest, mark)."""
    from credence.console import core

    result = {"verdict": "generated", "generation_id": "g1", "confidence": 0.99, "evidence": [], "segments": [],
              "clip": {"duration_s": 4.0}, "disclosure": {
                  "label": {"mode": "visible", "text": "AI-generated", "position": "bottom-right"},
                  "label_source": "manifest", "manifest_found": False, "mark_found": True}}
    page = core._templates.get_template("verify.html")
    html = page.render(result=result, filename="m.mp4", session=None, csrf="x", page="verify", flash=[])
    assert "Disclosure" in html and "AI-generated (visible, bottom-right) · recorded in the manifest" in html
    assert "<th>our C2PA manifest</th><td>not found</td>" in html and "<th>our watermark</th><td>found</td>" in html
    bare = page.render(result={**result, "disclosure": {"label": None, "label_source": None, "manifest_found": False,
                                                        "mark_found": False}},
                       filename="m.mp4", session=None, csrf="x", page="verify", flash=[])
    assert "none recorded" in bare
