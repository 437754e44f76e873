"""Bounded decoding (issue 21): a clip is held to a pixel budget before and while it is decoded.

The bombs are real H.264 streams whose sequence header declares 16384×8704 (bench.bombs makes
them from a 64×64 encode in well under a second): `declared` says so from the first header (the
probe sees it), `switch` starts honest and switches mid-stream (only the decoder sees it). The
live test runs `credence serve` as a subprocess and measures its RSS (the process tree) while two
bombs are verified at once: before this change, four of them took it from 0.7 to 6.7 GB.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import av
import pytest

from bench.bombs import RssSampler, make_resolution_bomb, make_small_clip, serving, tree_rss, upload
from credence.settings import Settings, SettingsError
from provenance.errors import InvalidVideo, VideoTooLarge
from provenance.video import VideoInfo, iter_frames, open_video, probe
from provenance.video_limits import DecodeLimits, bounded_decode, check_declared, decoder_threads

from .conftest import make_clip

BOMB_BYTES_MAX = 64 * 1024


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    return {kind: make_resolution_bomb(folder / f"{kind}.mp4", kind=kind, frames=30) for kind in ("declared", "switch")}


def _info(width: int, height: int, fps: float = 25.0, frames: int = 250) -> VideoInfo:
    return VideoInfo(width, height, fps, frames, frames / fps if fps else 0.0, "h264", "mp4")


# -- what the headers declare ---------------------------------------------------------------------
def test_frames_must_fit_the_box_either_way_round() -> None:
    limits = DecodeLimits()
    for width, height in ((4096, 2304), (2304, 4096), (3840, 2160), (1280, 720), (16, 16)):
        check_declared(_info(width, height), limits)
    for width, height in ((4097, 2304), (8192, 1024), (4096, 2400), (16384, 8704)):
        with pytest.raises(VideoTooLarge, match="CREDENCE_MAX_FRAME_SIZE"):
            check_declared(_info(width, height), limits)


def test_absurd_declarations_are_invalid_not_just_large() -> None:
    limits = DecodeLimits()
    for info in (_info(40000, 64), _info(64, 65536), _info(640, 360, fps=1e6), _info(640, 360, fps=float("nan")),
                 VideoInfo(640, 360, 25.0, 10**10, 4e8, "h264", "mp4")):
        with pytest.raises(InvalidVideo) as caught:
            check_declared(info, limits)
        assert not isinstance(caught.value, VideoTooLarge), info
        assert "no real video" in str(caught.value)


def test_duration_and_total_pixels_are_budgeted() -> None:
    with pytest.raises(VideoTooLarge, match="600 s limit"):
        check_declared(_info(640, 360, frames=25 * 601), DecodeLimits())
    small = DecodeLimits(max_total_pixels=640 * 360 * 100)
    check_declared(_info(640, 360, frames=100), small)
    with pytest.raises(VideoTooLarge, match="CREDENCE_MAX_TOTAL_PIXELS"):
        check_declared(_info(640, 360, frames=101), small)
    # The default overall budget is 600 s of 3840x2160 at 60 fps.
    check_declared(_info(3840, 2160, fps=60, frames=600 * 60), DecodeLimits())
    with pytest.raises(VideoTooLarge):
        check_declared(_info(3840, 2160, fps=60, frames=600 * 60 + 1), DecodeLimits(max_seconds=None))


def test_the_budget_is_a_setting(tmp_path: Path) -> None:
    settings = Settings.from_env({"CREDENCE_HOME": str(tmp_path), "CREDENCE_MAX_FRAME_SIZE": "1920x1080",
                                  "CREDENCE_MAX_TOTAL_PIXELS": "1000000000"})
    limits = settings.decode_limits
    assert limits.frame_box == (1920, 1080) and limits.max_total_pixels == 10**9 and limits.max_seconds == 600
    assert Settings.from_env({"CREDENCE_HOME": str(tmp_path)}).decode_limits == DecodeLimits()
    for bad in ("big", "4096", "10x10", "0x0", "4096x-1"):
        with pytest.raises(SettingsError, match="CREDENCE_MAX_FRAME_SIZE"):
            Settings.from_env({"CREDENCE_HOME": str(tmp_path), "CREDENCE_MAX_FRAME_SIZE": bad})


# -- the bombs themselves -------------------------------------------------------------------------
def test_the_bombs_are_small_and_declare_huge_frames(bombs: dict[str, Path]) -> None:
    assert all(path.stat().st_size < BOMB_BYTES_MAX for path in bombs.values())
    with av.open(str(bombs["declared"])) as container:  # plain PyAV: open_video refuses it
        context = container.streams.video[0].codec_context
        assert (context.width, context.height) == (16384, 8704)
    assert probe(bombs["switch"], decode_check=False).width == 64  # the first header is honest


def test_a_declared_bomb_is_refused_before_any_decoder_opens(bombs: dict[str, Path]) -> None:
    with pytest.raises(VideoTooLarge, match="16384x8704"):
        check_declared(probe(bombs["declared"], decode_check=False), DecodeLimits())


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent (pytest, with models loaded).
DECODE_PEAK = """
import sys
from pathlib import Path
from provenance.errors import InvalidVideo
from provenance.video import iter_frames
frames = 0
try:
    for _ in iter_frames(Path(sys.argv[1])):
        frames += 1
    outcome = "decoded"
except InvalidVideo as exc:
    outcome = "refused: " + str(exc)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(frames, int(hwm.split()[1]) // 1024, outcome, sep="|")
"""


@pytest.mark.parametrize("kind", ["declared", "switch"])
def test_decoding_a_bomb_stops_at_the_first_huge_frame_in_bounded_memory(bombs: dict[str, Path], kind: str) -> None:
    """Every reader opens clips through `open_video`, which gives FFmpeg the per-frame pixel limit: a
    header met mid-stream cannot make it allocate a 214 MB frame (unbounded, one decode peaks near 1.5 GB)."""
    done = subprocess.run([sys.executable, "-c", DECODE_PEAK, str(bombs[kind])], capture_output=True, text=True,
                          timeout=300, check=True)
    frames, peak_mb, outcome = done.stdout.strip().split("|", 2)
    assert outcome.startswith("refused"), done.stdout
    assert int(frames) <= 10 and int(peak_mb) < 300, done.stdout


def test_bounded_decode_reads_an_ordinary_clip_whole(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4")
    expected = sum(1 for _ in iter_frames(clip))
    container = open_video(clip)
    try:
        stream = container.streams.video[0]
        frames = list(bounded_decode(container, stream, DecodeLimits()))
    finally:
        container.close()
    assert len(frames) == expected and frames[0].width == 256
    three_frames = DecodeLimits(max_total_pixels=256 * 192 * 3)
    container = open_video(clip)
    try:
        with pytest.raises(VideoTooLarge, match="pixel budget"):
            for _ in bounded_decode(container, container.streams.video[0], three_frames):
                pass
    finally:
        container.close()


def test_decoder_threads_shrink_as_frames_grow() -> None:
    assert 1 <= decoder_threads(1280, 720) <= 4  # one per core, never FFmpeg's one per host core
    assert decoder_threads(4096, 2304) == 1
    assert decoder_threads(16384, 8704) == 1


# -- the CLI ----------------------------------------------------------------------------------------
def test_cli_verify_refuses_a_bomb_clearly(runtime: object, cli_env: dict[str, str], bombs: dict[str, Path]) -> None:
    done = subprocess.run([sys.executable, "-m", "credence", "verify", str(bombs["declared"])], env=cli_env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    said = done.stdout + done.stderr
    assert "16384x8704" in said and "4096x2304" in said and "Traceback" not in said


# -- a live server ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_bombs_at_once_keep_the_server_within_300_mb(tmp_path: Path, bombs: dict[str, Path]) -> None:
    key = "bounded-decode-key-0123456789"
    with serving(tmp_path / "home", key) as (url, proc):
        warm = upload(url, key, make_small_clip(tmp_path / "warm.mp4"))  # loads the detector's models first
        assert warm["status"] == 200, warm
        resting = tree_rss(proc.pid)
        answers: dict[str, dict[str, object]] = {}

        def send(kind: str) -> None:
            answers[kind] = upload(url, key, bombs[kind])

        threads = [threading.Thread(target=send, args=(kind,)) for kind in ("declared", "switch")]
        with RssSampler(proc.pid) as sampler:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        growth_mb = (sampler.peak - resting) / 2**20
        after = upload(url, key, make_small_clip(tmp_path / "after.mp4"))
    declared, switch = answers["declared"], answers["switch"]
    assert declared["status"] == 413 and declared["content_type"] == "application/problem+json", declared
    assert "16384x8704" in str(declared["detail"]) and "CREDENCE_MAX_FRAME_SIZE" in str(declared["detail"])
    assert switch["status"] == 422 and switch["content_type"] == "application/problem+json", switch
    assert growth_mb <= 300, json.dumps({"resting_mb": resting / 2**20, "growth_mb": growth_mb, **answers})
    assert after["status"] == 200  # and the server still serves
