"""Bounded decoding: what an uploaded clip may cost to decode, checked before and while decoding it.

A compressed stream says little about what it decodes to: a 420 KB MP4 whose H.264 sequence
header declares 16384×8704 decodes to 214 MB frames (yuv420p), and FFmpeg's frame threads hold
several of them at once: one such upload took the API from 1.9 to 4.36 GB of RSS. The byte and
duration limits do not see it. So every untrusted clip is held to a pixel budget:

- **per frame**: the frame must fit a box (default 4096×2304, either orientation);
- **overall**: width × height × frames at most `max_total_pixels` (default 600 s of 3840×2160
  at 60 fps, about 3×10^11), and no longer than `max_seconds`.

`check_declared` checks what the headers declare (`provenance.video.probe` without decoding:
opening the container parses the codec's own headers, so the H.264 SPS size is what it sees,
not only the MP4 track header), before any decoder is opened. Over budget is `VideoTooLarge`
(HTTP 413); a declaration no real video makes (a side over 32768 px, thousands of frames a
second, centuries of video) is `InvalidVideo` (422).

Headers can still lie (a later sequence header may switch to a huge size mid-stream), so
`configure_decoder` also gives FFmpeg its own `max_pixels` limit, which refuses to allocate a
larger frame, and a thread count that shrinks as frames grow; `bounded_decode` checks each
frame's size and the running pixel total as frames come. Frames are yielded one at a time:
nothing here holds more than the decoder's own frames.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .errors import InvalidVideo, VideoTooLarge

if TYPE_CHECKING:  # only for annotations: settings import this module, and must not pull FFmpeg in
    import av

#: Default frame box (either orientation): 4096×2304, a little over 4K UHD's 3840×2160.
DEFAULT_FRAME_BOX = (4096, 2304)
#: Default overall budget: 600 s × 3840×2160 (8.3 Mpx) × 60 fps.
DEFAULT_MAX_TOTAL_PIXELS = 600 * 3840 * 2160 * 60
DEFAULT_MAX_SECONDS = 600.0

#: Declarations past these are not big videos but lies (or fuzzing): refused as invalid (422).
ABSURD_SIDE = 32768
ABSURD_FPS = 1000.0
ABSURD_SECONDS = 10.0**7
ABSURD_FRAMES = 10**9

#: What one decoder's frames may take at once; its thread count is cut to fit (each frame thread
#: holds a few frames), and never passes `MAX_DECODE_THREADS`.
DECODE_FRAME_MEMORY = 96 * 1024 * 1024
MAX_DECODE_THREADS = 4
FRAMES_PER_THREAD = 4

_BOX = re.compile(r"^\s*(\d{1,6})\s*[x×X]\s*(\d{1,6})\s*$")


class Declared(Protocol):
    """What a probe says about a clip (`provenance.video.VideoInfo`)."""

    width: int
    height: int
    fps: float
    frames: int
    duration_s: float


@dataclass(frozen=True)
class DecodeLimits:
    """The pixel budget of one untrusted clip."""

    frame_box: tuple[int, int] = DEFAULT_FRAME_BOX
    max_total_pixels: int = DEFAULT_MAX_TOTAL_PIXELS
    max_seconds: float | None = DEFAULT_MAX_SECONDS

    @property
    def max_frame_pixels(self) -> int:
        """The most pixels one frame may have."""
        return self.frame_box[0] * self.frame_box[1]

    def frame_problem(self, width: int, height: int) -> str | None:
        """Why a `width`×`height` frame is over the budget (None when it fits the box, either way round)."""
        long_box, short_box = max(self.frame_box), min(self.frame_box)
        if max(width, height) > long_box or min(width, height) > short_box:
            return (f"frames of {width}x{height} are over the {self.frame_box[0]}x{self.frame_box[1]} "
                    "frame limit (CREDENCE_MAX_FRAME_SIZE)")
        return None

    def check_frame(self, width: int, height: int, where: str = "the clip") -> None:
        """`VideoTooLarge` for a frame over the box."""
        if max(width, height) > ABSURD_SIDE:
            raise InvalidVideo(f"{where}: declares frames of {width}x{height}, which no real video has")
        why = self.frame_problem(width, height)
        if why is not None:
            raise VideoTooLarge(f"{where}: {why}")


def parse_frame_box(text: str) -> tuple[int, int]:
    """`"4096x2304"` → (4096, 2304); `ValueError` naming the expected form otherwise."""
    match = _BOX.match(text)
    if not match or int(match.group(1)) < 16 or int(match.group(2)) < 16:
        raise ValueError(f"{text!r} is not a frame size like 4096x2304 (each side at least 16)")
    return int(match.group(1)), int(match.group(2))


def _finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))


def check_declared(info: Declared, limits: DecodeLimits, where: str = "the clip") -> None:
    """Refuse what the headers declare: absurd (`InvalidVideo`) or over the budget (`VideoTooLarge`)."""
    width, height, fps, frames, seconds = info.width, info.height, info.fps, info.frames, info.duration_s
    limits.check_frame(width, height, where)
    if not _finite(fps) or fps > ABSURD_FPS:
        raise InvalidVideo(f"{where}: declares {fps:g} frames a second, which no real video has")
    if not _finite(seconds) or seconds > ABSURD_SECONDS or frames > ABSURD_FRAMES:
        raise InvalidVideo(f"{where}: declares {frames} frames / {seconds:g} s, which no real video has")
    if limits.max_seconds is not None and seconds > limits.max_seconds:
        raise VideoTooLarge(f"{where}: lasts {seconds:.1f} s, over the {limits.max_seconds:g} s limit "
                            "(CREDENCE_MAX_UPLOAD_SECONDS)")
    count = max(frames, math.ceil(seconds * fps) if fps > 0 else 0)
    total = width * height * count
    if total > limits.max_total_pixels:
        raise VideoTooLarge(f"{where}: {count} frames of {width}x{height} ({total:.3g} pixels) are over the "
                            f"{limits.max_total_pixels:.3g} pixel budget (CREDENCE_MAX_TOTAL_PIXELS)")


_process_limits = DecodeLimits()


def set_process_limits(limits: DecodeLimits) -> None:
    """Make `limits` what every decoder of this process is held to (the service sets its settings' here)."""
    global _process_limits
    _process_limits = limits


def process_limits() -> DecodeLimits:
    """The limits decoders get when their caller names none (`set_process_limits`; the defaults until then)."""
    return _process_limits


def _cores() -> int:
    """Cores this process may run on (its affinity; FFmpeg's own count sees every core of the host)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def decoder_threads(width: int, height: int) -> int:
    """Frame threads for a decoder of `width`×`height` frames: one per core up to `MAX_DECODE_THREADS`,
    fewer as frames grow (each thread holds a few frames), at least 1.

    Never 0 (FFmpeg's automatic count): that is one thread per core of the host, 17 on a 16-core
    machine, and each frame thread re-allocates the decoder's tables when a sequence header
    switches to a huge size mid-stream (about 45 MB each at 16384×8704).
    """
    frame_bytes = max(1, width * height) * 3 // 2  # yuv420p
    fit = DECODE_FRAME_MEMORY // (frame_bytes * FRAMES_PER_THREAD)
    return int(max(1, min(MAX_DECODE_THREADS, _cores(), fit)))


def configure_decoder(stream: av.video.stream.VideoStream, limits: DecodeLimits | None = None) -> None:
    """Before the first decode: FFmpeg's own per-frame pixel limit, and a thread count sized to the frames.

    `max_pixels` makes FFmpeg refuse to allocate a frame larger than the budget, even when a
    sequence header met mid-stream switches to a huge size that the probe never saw.
    """
    limits = limits or _process_limits
    context = stream.codec_context
    options = dict(context.options or {})
    options["max_pixels"] = str(limits.max_frame_pixels)
    context.options = options
    width, height = context.width or limits.frame_box[0], context.height or limits.frame_box[1]
    context.thread_count = decoder_threads(width, height)


def bounded_decode(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                   limits: DecodeLimits | None = None, where: str = "the clip") -> Iterator[av.VideoFrame]:
    """`container.decode(stream)` under `limits`: each frame's size and the running pixel total checked.

    Call before anything else has decoded from `stream` (it configures the decoder).
    """
    limits = limits or _process_limits
    configure_decoder(stream, limits)
    total = 0
    for frame in container.decode(stream):
        limits.check_frame(frame.width, frame.height, where)
        total += frame.width * frame.height
        if total > limits.max_total_pixels:
            raise VideoTooLarge(f"{where}: decodes to more than the {limits.max_total_pixels:.3g} pixel budget "
                                "(CREDENCE_MAX_TOTAL_PIXELS)")
        yield frame


__all__ = ["ABSURD_FPS", "ABSURD_SECONDS", "ABSURD_SIDE", "DEFAULT_FRAME_BOX", "DEFAULT_MAX_SECONDS",
           "DEFAULT_MAX_TOTAL_PIXELS", "Declared", "DecodeLimits", "bounded_decode", "check_declared",
           "configure_decoder", "decoder_threads", "parse_frame_box", "process_limits", "set_process_limits"]
