"""Tracing uploads (issue 24): the fingerprint alone finds reframed and mirrored copies, and a
compilation's timeline lists each of our clips' seconds and nothing for foreign footage.

Two clips are published through the real publisher (watermark, C2PA, ledger, fingerprint rows);
every verification here consults the fingerprint source alone (the watermark switched off), so
what is tested is the fingerprint's own reach.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import detector
from credence.runtime import Runtime
from detector import FingerprintSource
from provenance.publish import PublishedClip, PublishRequest
from provenance.video import iter_frames, write_video
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
    """Two unrelated 3 s clips published into one ledger."""
    folder = tmp_path_factory.mktemp("trace")
    runtime = Runtime(settings_for(folder / "home"))
    runtime.init()
    clips = []
    for name, seed in (("a", 31), ("b", 32)):
        source = write_scene(folder / f"{name}-src.mp4", seed)
        clips.append(runtime.publisher.publish_file(source, folder / f"{name}.mp4",
                                                    PublishRequest(prompt=name, model_name="m")))
    yield Published(runtime, clips[0], clips[1], folder)
    runtime.ledger.dispose()


def fingerprint_alone(path: Path, runtime: Runtime) -> detector.Verdict:
    return detector.verify(path, runtime.verification, [FingerprintSource()])


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["reframe_9x16", "hflip"])
def test_reframed_and_flipped_copies_are_traced_by_the_fingerprint_alone(published: Published, attack: str) -> None:
    edited = apply_attack(attack, published.a.path, published.folder / f"a-{attack}.mp4")
    verdict = fingerprint_alone(edited, published.runtime)
    assert verdict.verdict == "generated" and verdict.generation_id == published.a.generation_id, verdict.to_dict()
    assert [s["generation_id"] for s in verdict.segments] == [published.a.generation_id]
    assert verdict.segments[0]["sources"] == ["fingerprint"]


@pytest.mark.slow
def test_a_montage_lists_both_of_our_spans_and_nothing_for_the_foreign_part(published: Published) -> None:
    """Clip A (0-3 s), 2 s of footage we never published (3-5 s), clip B (5-8 s)."""
    a = list(iter_frames(published.a.path))
    b = list(iter_frames(published.b.path))
    foreign = scene_frames(77, frames=24)
    montage = published.folder / "montage.mp4"
    write_video(montage, iter(a + foreign + b), 12.0, preset="veryfast")
    verdict = fingerprint_alone(montage, published.runtime)
    segments = verdict.segments
    assert [s["generation_id"] for s in segments] == [published.a.generation_id, published.b.generation_id], segments
    first, second = segments
    assert abs(first["start_s"] - 0.0) <= 0.5 and abs(first["end_s"] - 3.0) <= 0.75, first
    assert abs(second["start_s"] - 5.0) <= 0.75 and abs(second["end_s"] - 8.0) <= 0.5, second
    assert first["end_s"] <= 3.75 and second["start_s"] >= 4.25  # nothing of the foreign 3-5 s
    assert first["clip_start_s"] == 0.0 and second["clip_start_s"] == 0.0
    # The verdict still names one generation (the best-supported), not `review`: a montage is not an ambiguity.
    assert verdict.verdict == "generated" and verdict.generation_id in {published.a.generation_id,
                                                                        published.b.generation_id}
    # Over the API's JSON too.
    assert verdict.to_dict()["segments"] == segments
    # With every source: the watermark reads one clip's mark, the fingerprint's best may be the other
    # part; that is a compilation, not a conflict, and the verdict names the best-supported one.
    full = detector.verify(montage, published.runtime.verification)
    assert full.verdict == "generated", full.to_dict()
    assert [s["generation_id"] for s in full.segments] == [published.a.generation_id, published.b.generation_id]
    marked = next(e for e in full.evidence if e.source == "watermark").generation_id
    if marked is not None:
        assert full.generation_id == marked
        assert "watermark" in next(s for s in full.segments if s["generation_id"] == marked)["sources"]


@pytest.mark.slow
def test_an_unrelated_clip_gets_no_segment(published: Published) -> None:
    other = write_scene(published.folder / "other.mp4", 78)
    for sources in ([FingerprintSource()], None):
        verdict = detector.verify(other, published.runtime.verification, sources)
        assert verdict.verdict == "not_generated" and verdict.segments == [], verdict.to_dict()


def test_timeline_merges_one_generations_spans_and_keeps_others_apart() -> None:
    """The timeline rule on evidence alone: a whole-clip watermark confirms the fingerprint's span."""
    fp = detector.Evidence("fingerprint", "g1", "generated", 0.95, {"spans": [
        {"start_s": 0.0, "end_s": 2.5, "generation_id": "g1", "clip_start_s": 0.0, "clip_end_s": 3.0, "speed": 1.0},
        {"start_s": 6.0, "end_s": 8.0, "generation_id": "g2", "clip_start_s": 1.0, "clip_end_s": 3.0, "speed": 1.0}]})
    wm = detector.Evidence("watermark", "g1", "generated", 0.999, {})
    from detector.segments import timeline

    segments = timeline([fp, wm], 8.0)
    assert [(s["generation_id"], s["start_s"], s["end_s"], s["sources"]) for s in segments] == [
        ("g1", 0.0, 2.5, ["fingerprint", "watermark"]), ("g2", 6.0, 8.0, ["fingerprint"])]
    # Alone, the watermark (no per-window payloads yet) places the whole upload.
    assert timeline([wm], 8.0) == [{"start_s": 0.0, "end_s": 8.0, "generation_id": "g1", "sources": ["watermark"]}]
    # A weak or ambiguous source places nothing.
    assert timeline([detector.Evidence("watermark", "g1", "weak", 0.3, {})], 8.0) == []
    assert np.isfinite(segments[0]["end_s"])


def test_console_verify_page_draws_the_timeline() -> None:
    """The verify page's bars: one per segment, placed by its seconds over the upload's length."""
    from credence.console import core

    result = {"verdict": "generated", "generation_id": "g1", "confidence": 0.99, "evidence": [], "clip":
              {"duration_s": 8.0}, "segments": [
                  {"start_s": 0.0, "end_s": 2.0, "generation_id": "g1", "sources": ["fingerprint", "watermark"],
                   "clip_start_s": 0.0, "clip_end_s": 2.0, "speed": 1.0},
                  {"start_s": 6.0, "end_s": 8.0, "generation_id": "g2", "sources": ["fingerprint"],
                   "clip_start_s": 1.0, "clip_end_s": 3.0, "speed": 1.25}]}
    html = core._templates.get_template("verify.html").render(result=result, filename="m.mp4", session=None,
                                                              csrf="x", page="verify", flash=[])
    assert 'class="ours ours0"' in html and 'class="ours ours1"' in html
    assert 'x="0.0" y="8" width="250.0"' in html and 'x="750.0" y="8" width="250.0"' in html
    assert "/console/generations/g2" in html and "1.0–3.0 at 1.25×" in html
    empty = core._templates.get_template("verify.html").render(
        result={**result, "segments": []}, filename="m.mp4", session=None, csrf="x", page="verify", flash=[])
    assert "No second of this upload matches a published clip." in empty and "ours0" not in empty


def test_a_match_of_more_seconds_than_the_upload_holds_is_not_strong() -> None:
    """Issue 24: a 1 s never-published gradient clip 'matched 2 of 1 s' of two bulk clips (review)."""
    from detector.fingerprint_source import is_strong
    from provenance.index import FingerprintMatch

    chance = FingerprintMatch(1, "g", matched_seconds=2, expected_seconds=1, similarity=1.0, mean_distance=12.5,
                              region=0, query_variant=0, offset_s=0.0)
    assert not is_strong(chance)
    exact = FingerprintMatch(1, "g", 1, 1, 1.0, 2.0, 0, 0, 0.0)
    assert is_strong(exact)  # a one-second clip still matches when nearly exact
    assert is_strong(FingerprintMatch(1, "g", 3, 4, 0.75, 12.0, 0, 0, 0.0))
    # Two seconds are what chance reaches against 10M clips (17.5-18 bits, and 9.5): near-exact only.
    assert not is_strong(FingerprintMatch(1, "g", 2, 2, 1.0, 17.5, 0, 0, 0.0))
    assert not is_strong(FingerprintMatch(1, "g", 2, 3, 0.6667, 9.5, 0, 0, 0.0))
    assert is_strong(FingerprintMatch(1, "g", 2, 2, 1.0, 4.0, 0, 0, 0.0))
