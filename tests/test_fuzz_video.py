"""Property-based fuzz of the upload and video-reading path (hypothesis, derandomised).

Damaged files (truncated, bit-flipped anywhere or next to the container's own structures,
spliced head-of-one + tail-of-another) made from real
MP4, MOV and WebM clips written by PyAV, and from a published clip that carries our watermark
and C2PA manifest, go through `provenance.video.probe` / `iter_frames`, `detector.verify` and
`POST /v1/verify` on a real server. Every input must be answered with a clear error (an
`InvalidVideo`-like `ProvenanceError`, a 4xx) or a verdict: no other exception, no 500, no
hang (each call has a hard deadline), and no source that broke quietly (`error` evidence).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import detector
from credence.app import create_app
from credence.runtime import Runtime
from provenance.errors import ProvenanceError
from provenance.publish import PublishRequest
from provenance.video import iter_frames, probe, write_video

from .conftest import API_KEY, LiveServer, make_clip, settings_for

pytestmark = pytest.mark.slow  # a live server and a hypothesis corpus of damaged videos

T = TypeVar("T")

#: A call that takes longer than this on one small damaged clip is a hang.
DEADLINE_S = 20.0

#: The clips the damage starts from, by name (the suffix says the container).
SEEDS = ("plain.mp4", "plain.mov", "plain.webm", "published.mp4")

#: Examples per property: small clips keep the whole module near 30 s on one loaded CPU core.
FUZZ = settings(derandomize=True, database=None, deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@dataclass
class Corpus:
    seeds: dict[str, bytes]
    folder: Path
    runtime: Runtime
    server: LiveServer
    published_id: str


def _frames(seed: int, width: int, height: int, count: int = 12) -> Iterator[np.ndarray]:
    """A textured pan: real motion for the codecs, real structure for the fingerprint."""
    rng = np.random.default_rng(seed)
    base = np.kron(rng.integers(0, 256, (height // 8, width // 8 + count, 3), dtype=np.uint8),
                   np.ones((8, 8, 1), dtype=np.uint8))
    for i in range(count):
        yield np.ascontiguousarray(base[:, i * 4: i * 4 + width])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    folder = tmp_path_factory.mktemp("fuzz")
    runtime = Runtime(settings_for(folder / "home"))
    runtime.init()
    write_video(folder / "plain.mp4", _frames(1, 96, 64), 12.0, preset="ultrafast")
    write_video(folder / "plain.mov", _frames(2, 96, 64), 12.0, preset="ultrafast")
    write_video(folder / "plain.webm", _frames(3, 96, 64), 12.0, codec="libvpx-vp9")
    # The published seed is a clip the mark can carry (publish reads its mark back and refuses one it
    # cannot, issue 22): make_clip's smooth texture at 256x192. The plain seeds stay small and fast.
    source = make_clip(folder / "source.mp4", frames=12, fps=12.0, seed=4, preset="ultrafast")
    clip = runtime.publisher.publish_file(source, folder / "published.mp4",
                                          PublishRequest(prompt="fuzz", model_name="m"))
    seeds = {name: (folder / name).read_bytes() for name in SEEDS}
    app_settings = settings_for(folder / "home", CREDENCE_API_KEYS=API_KEY, CREDENCE_MAX_UPLOAD_BYTES=5_000_000,
                                CREDENCE_MAX_UPLOAD_SECONDS=20)
    with LiveServer(create_app(app_settings)) as server:
        yield Corpus(seeds, folder, runtime, server, clip.generation_id)
    runtime.ledger.dispose()


#: Where containers keep what a reader trusts (box types of MP4/MOV, element ids of WebM): damage
#: next to them reaches the parsers' corner cases far more often than damage anywhere.
MARKERS = (b"ftyp", b"moov", b"mvhd", b"trak", b"tkhd", b"mdhd", b"hdlr", b"stsd", b"avc1", b"avcC", b"stts",
           b"stss", b"stsc", b"stsz", b"stco", b"mdat", b"uuid", b"jumb", b"\x1a\x45\xdf\xa3", b"\x18\x53\x80\x67",
           b"\x16\x54\xae\x6b", b"\xae", b"\x1f\x43\xb6\x75", b"\xa3", b"V_VP9")


def _marker_offsets(data: bytes) -> list[int]:
    """Offsets of the first few occurrences of every marker in `data`."""
    found: list[int] = []
    for marker in MARKERS:
        start = 0
        for _ in range(4):
            at = data.find(marker, start)
            if at < 0:
                break
            found.append(at)
            start = at + 1
    return sorted(set(found)) or [0]


def _position(size: int) -> st.SearchStrategy[int]:
    """Anywhere, but often in the first or last 4 KiB, where the container's headers live."""
    edge = min(size, 4096)
    return st.one_of(st.integers(0, size - 1), st.integers(0, edge - 1), st.integers(size - edge, size - 1))


@st.composite
def damaged(draw: st.DrawFn, seeds: dict[str, bytes]) -> tuple[str, str, bytes]:
    """(seed name, kind of damage, damaged bytes)."""
    name = draw(st.sampled_from(SEEDS))
    data = bytearray(seeds[name])
    kind = draw(st.sampled_from(("truncated", "bit-flipped", "header-damaged", "spliced")))
    if kind == "truncated":
        data = data[: draw(_position(len(data)))]
    elif kind == "bit-flipped":
        for position in draw(st.lists(_position(len(data)), min_size=1, max_size=24)):
            data[position] ^= 1 << draw(st.integers(0, 7))
    elif kind == "header-damaged":
        # A few bytes in one of the container's own structures: a box type, size, count or field.
        offsets = _marker_offsets(bytes(data))
        for _ in range(draw(st.integers(1, 4))):
            at = min(len(data) - 1, max(0, draw(st.sampled_from(offsets)) + draw(st.integers(-8, 40))))
            data[at] = draw(st.one_of(st.integers(0, 255), st.sampled_from((0, 0xFF, data[at] ^ 0x80))))
    else:
        other = seeds[draw(st.sampled_from(SEEDS))]
        data = data[: draw(_position(len(data)))] + other[draw(_position(len(other))):]
    return name, kind, bytes(data)


def _within(label: str, call: Callable[[], T]) -> T:
    """`call()`, failing the example if it has not answered within `DEADLINE_S` (a hang)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the test's thread, judged there
            box["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(DEADLINE_S)
    if worker.is_alive():
        pytest.fail(f"{label} did not answer within {DEADLINE_S} s (a hang)")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def _write(corpus: Corpus, name: str, data: bytes) -> Path:
    path = corpus.folder / f"case{Path(name).suffix}"
    path.write_bytes(data)
    return path


def _answers_or_refuses(label: str, call: Callable[[], T]) -> T | None:
    """The call's answer, or None for a clear refusal (`ProvenanceError`); anything else fails."""
    try:
        return _within(label, call)
    except ProvenanceError as exc:
        assert str(exc), f"{label}: {type(exc).__name__} without a message"
        return None


def test_the_undamaged_seeds_are_read_and_verified(corpus: Corpus) -> None:
    """The fuzz starts from clips the path handles: the published one is ours, the others are not."""
    for name in SEEDS:
        path = corpus.folder / name
        assert probe(path).frames == 12 and sum(1 for _ in iter_frames(path)) == 12
        verdict = detector.verify(path, corpus.runtime.verification)
        expected = ("generated", corpus.published_id) if name == "published.mp4" else ("not_generated", None)
        assert (verdict.verdict, verdict.generation_id) == expected, verdict.to_dict()


@settings(FUZZ, max_examples=80)
@given(case=st.data())
def test_damaged_files_are_read_or_refused(corpus: Corpus, case: st.DataObject) -> None:
    name, kind, data = case.draw(damaged(corpus.seeds), label="damage")
    path = _write(corpus, name, data)
    label = f"{kind} {name} ({len(data)} bytes)"
    for decode_check in (False, True):
        info = _answers_or_refuses(f"probe {label}", lambda check=decode_check: probe(path, decode_check=check))
        assert info is None or (info.width >= 16 and info.height >= 16), info
    frames = _answers_or_refuses(f"iter_frames {label}", lambda: [f.shape for f in iter_frames(path)])
    assert frames is None or all(len(shape) == 3 and shape[2] == 3 for shape in frames)


@settings(FUZZ, max_examples=40)
@given(case=st.data())
def test_damaged_files_get_a_verdict_or_a_clear_error(corpus: Corpus, case: st.DataObject) -> None:
    name, kind, data = case.draw(damaged(corpus.seeds), label="damage")
    path = _write(corpus, name, data)
    verdict = _answers_or_refuses(f"verify {kind} {name}", lambda: detector.verify(path, corpus.runtime.verification))
    if verdict is None:
        return
    assert verdict.verdict in ("generated", "not_generated", "review")
    broken = [e.to_dict() for e in verdict.evidence if e.finding == "error"]
    assert not broken, f"a source broke on {kind} {name}: {broken}"
    if verdict.verdict == "generated":  # damage never makes a clip ours, least of all someone else's
        assert verdict.generation_id == corpus.published_id


@settings(FUZZ, max_examples=40)
@given(case=st.data())
def test_damaged_uploads_are_answered_4xx_or_200_never_500(corpus: Corpus, case: st.DataObject) -> None:
    name, kind, data = case.draw(damaged(corpus.seeds), label="damage")
    with httpx.Client(base_url=corpus.server.url, timeout=DEADLINE_S, headers={"X-API-Key": API_KEY}) as client:
        r = client.post("/v1/verify", files={"file": (name, data, "application/octet-stream")})
    assert r.status_code in (200, 413, 415, 422), (kind, name, r.status_code, r.text)
    body = r.json()
    if r.status_code == 200:
        assert body["verdict"] in ("generated", "not_generated", "review")
        assert not [e for e in body["evidence"] if "error" in e], body
    else:
        assert body.get("detail"), body
