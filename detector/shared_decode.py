"""One decode of an upload for every source that reads its pixels (issue 24).

The watermark and the fingerprint each used to decode the upload: a 30 s 720p verification cost
1.7-1.9x a full decode of the same file. Here the file is decoded once, and each decoded frame
goes where it is needed:

* the watermark's look windows (`windows.looks_for`: up to 4 windows of 3 s, every frame up
  to 30 fps) are decoded in full; the whole-clip read sums them in `windows.Looks`, analysed
  after each window exactly as `detect_watermark_file` does, and once a look is decisive the
  rest of the clip is no longer decoded in full for it;
* everywhere else only the frames something references are decoded (FFmpeg `skip_frame =
  NONREF`, the fingerprint's sampled decode: every frame that comes out is exact), and the
  fingerprint converts about 12 of them a second (inside the full windows, of all frames);
* the per-window watermark reader (`provenance.watermark.per_window`) takes up to 16 frames of
  each 2 s window; its windows are analysed only when the whole-clip read found the mark.

The fingerprint's half-second windows are hashed on two threads (`query_from_frames`) while
this module's thread decodes on (FFmpeg and the hashing release the GIL).

H.265 (and any codec other than H.264) is decoded in full from the start: x265's B-pyramid
leaves little to skip. Whatever the codec, what comes out decides:
a gap of more than `MAX_SAMPLED_GAP_S` between sampled frames restarts the read in full, as the
fingerprint's own query does (`provenance.fingerprint.query`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from provenance.errors import InvalidVideo
from provenance.fingerprint.query import (
    MAX_SAMPLED_GAP_S,
    QUERY_FRAMES_PER_SECOND,
    SAMPLED_DECODE,
    QueryFingerprint,
    frame_grey,
    grey_size,
    prefetched,
    query_from_frames,
)
from provenance.video import READ_ERRORS, converter, decode_error, open_video

#: Codecs read sampled (`SAMPLED_DECODE`: only unreferenced frames skipped) outside the mark's windows.
SAMPLED_CODECS = frozenset({"h264"})
#: Seconds before a look window where full decoding resumes: frames leave the decoder a few
#: frames after their packets go in, and a B-frame decoded in the lead is simply not used.
LEAD_S = 0.5
#: Seconds beyond which an H.264 clip's whole-clip watermark read takes reference frames spread
#: over the whole clip instead of every frame of 4 windows of 3 s (`_WatermarkReads`): past the
#: windows' 12 s, the spread read sees more of the clip for less decoding.
SPREAD_OVER_S = 12.0
#: Frames handed to the watermark's worker thread and not yet done, at most (memory stays bounded).
PENDING_FRAMES = 8


@dataclass
class SharedRead:
    """What one decode gave each source: the fingerprint query, the watermark's reads, how it decoded."""

    fingerprint: QueryFingerprint | None = None
    watermark: Any = None  # provenance.watermark.WatermarkResult (torch loads only when keys exist)
    windows: list[Any] | None = None  # provenance.watermark.per_window.WindowRead, when the mark was found
    decode: dict[str, Any] = field(default_factory=dict)


class _Thin(Exception):
    """The sampled decode left a gap too long for the fingerprint's windows: read again in full."""


class _WatermarkReads:
    """The whole-clip read (looks) and the per-window reader, fed working-size luma as frames come.

    Two ways to lay the looks out, both fixed before any frame is seen (so the bound's factor
    `len(starts)` stays exact):

    * windows (`windows.looks_for`, as the file read): every frame of up to 4 windows of 3 s,
      which the sampled decode must decode in full (B-frames included);
    * spread (`spread=True`: an H.264 clip read sampled that is longer than the windows can
      cover, `SPREAD_OVER_S`): look k is the whole k-th part of the clip, and takes the frames
      the sampled decode gives there (those something references: I, P and B-pyramid
      references), at most `MAX_FRAMES` evenly in time. Nothing is decoded in full, so the
      watermark costs no decoding beyond the fingerprint's. A 30 s 720p x264 upload gives it
      about 360 frames spread over 30 s instead of 360 packed into 12; the frames left out are
      the ones the encoder quantises hardest (x264's pb ratio), so little of the mark goes with them.
    """

    def __init__(self, keys: Sequence[Any], duration_s: float | None, fps: float, spread: bool = False) -> None:
        import torch

        from provenance.watermark.per_window import WindowReads
        from provenance.watermark.windows import MAX_FRAMES, WINDOW_S, Looks, looks_for

        self.torch = torch
        self.window_s = WINDOW_S
        self.starts = looks_for(duration_s, WINDOW_S)
        self.spread = spread and duration_s is not None and len(self.starts) > 1
        if self.spread:
            assert duration_s is not None
            self.ends = [*self.starts[1:], duration_s + 1.0 / fps]
            self.step = (duration_s / len(self.starts)) / MAX_FRAMES
        else:
            self.ends = [start + WINDOW_S for start in self.starts]
            self.step = 0.0
        self.next_take = 0.0
        self.looks = Looks(list(keys), torch.device("cpu"), len(self.starts))
        self.frames_per_look = max(1, round(WINDOW_S * fps))
        self.stride = max(1, math.ceil(self.frames_per_look / MAX_FRAMES))
        self.fps = fps
        self.look = 0  # the look window being read
        self.decided = False
        self.windows = WindowReads(list(keys), duration_s, fps)
        self.to_grey = converter()  # one swscale context for the clip (`provenance.video.converter`)
        # The per-frame work (grey conversion, whitening, summing) runs on a thread of its own, in
        # order, so that it overlaps the decoding instead of following it (FFmpeg, swscale, OpenCV
        # and torch all release the GIL). The decode thread only decides which frames go.
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="watermark-read")
        self.pending: deque[Future[None]] = deque()

    def in_look(self, t: float) -> bool:
        """Whether `t` falls in the current look window (and the read still wants frames)."""
        if self.decided or self.look >= len(self.starts):
            return False
        return self.starts[self.look] - 0.5 / self.fps <= t < self.ends[self.look] - 0.5 / self.fps

    def needs_full(self, t: float) -> bool:
        """Whether frames around `t` must be decoded in full (a look window lies within `LEAD_S`)."""
        if self.spread or self.decided or self.look >= len(self.starts):
            return False
        start = self.starts[self.look]
        return start - LEAD_S <= t < start + self.window_s

    def close_looks_before(self, t: float) -> None:
        """Move past every look window that ended before `t`; analyse after the first one only.

        The file read analyses after every window (it stops reading at the first decisive one).
        Here the clip is decoded to its end for the fingerprint anyway, so the later windows are
        summed and analysed once, at the end: two analyses instead of up to four (each is a
        lattice search, about as costly as decoding a second of 720p), and the first one without
        the keyed scale sweep, which the last one runs on the whole sum. The bound still counts
        `len(starts)` looks, which over-counts: p stays valid, if a little conservative.
        """
        while not self.decided and self.look < len(self.starts) and \
                t >= self.ends[self.look] - 0.5 / self.fps:
            if self.look == 0:
                self.drain()
                self.decided = self.looks.analyse(sweep=len(self.starts) == 1)
            self.look += 1

    def _takes(self, t: float) -> bool:
        """Whether the whole-clip read takes the frame shown at `t`."""
        if not self.in_look(t):
            return False
        if not self.spread:
            return round((t - self.starts[self.look]) * self.fps) % self.stride == 0
        if t < self.next_take - 0.25 / self.fps:
            return False
        self.next_take = t + self.step
        return True

    def add(self, t: float, frame: Any) -> None:
        """Feed one decoded frame shown at `t` to whichever reads want it (the work goes to `worker`)."""
        self.close_looks_before(t)
        look = self._takes(t)
        window = self.windows.wants(t)
        if not (look or window):
            return
        if window:
            self.windows.claim(t)
        self.drain(keep=PENDING_FRAMES)
        self.pending.append(self.worker.submit(self._work, t, frame, look, window))

    def drain(self, keep: int = 0) -> None:
        """Wait until at most `keep` frames are still being worked on (their errors raise here)."""
        while len(self.pending) > keep:
            self.pending.popleft().result()

    def stop(self, failed: bool) -> None:
        """Finish (or, after a failure, drop) the queued frames and let the worker thread go."""
        try:
            if not failed:
                self.drain()
        finally:
            self.pending.clear()
            self.worker.shutdown(wait=True, cancel_futures=True)

    def _work(self, t: float, frame: Any, look: bool, window: bool) -> None:
        """One frame's grey conversion, whitening and sums (on the worker thread, in order)."""
        from provenance.watermark.statistics import work_size

        h, w = frame.height, frame.width
        hw, ww = work_size(h, w)
        # swscale's area reduction to grey, as the file read's (0.4 ms of CPU at 720p).
        luma = self.to_grey.reformat(frame, width=ww, height=hw, format="gray", interpolation="AREA").to_ndarray()
        white = None
        if look:  # whitened once, for the looks and the per-window read alike
            white = self.looks.acc.add_luma(self.torch.from_numpy(luma.astype(np.float32)), (h, w))
        if window:
            self.windows.add(t, luma, (h, w), white)

    def finish(self, path: Path) -> tuple[Any, list[Any] | None]:
        """The whole-clip result, and the per-window reads when the mark was found."""
        if not self.decided and (self.looks.result is None or len(self.starts) > 1):
            self.looks.analyse()  # every window summed, with the sweep (or a clip shorter than one)
        result = self.looks.result
        if result is None:
            raise InvalidVideo(f"{path.name}: the video stream holds no decodable frame")
        result.frames_used = self.looks.acc.frames
        windows = self.windows.read() if result.detected else None
        return result, windows


def _is_bidir(frame: Any) -> bool:
    """Whether the frame is a B-frame (what the sampled decode skips)."""
    kind = frame.pict_type  # an int in PyAV 14+ (FFmpeg's AV_PICTURE_TYPE_B is 3), an enum or "B" before
    return kind == 3 or getattr(kind, "name", str(kind)) == "B"


class _Pass:
    """One decoding pass over the file: yields the fingerprint's frames, feeds the watermark's reads."""

    def __init__(self, path: Path, keys: Sequence[Any], max_seconds: float | None, sampled: bool,
                 fingerprint: bool) -> None:
        self.path, self.keys, self.max_seconds = path, keys, max_seconds
        self.sampled, self.fingerprint = sampled, fingerprint
        self.watermark: _WatermarkReads | None = None
        self.decoded = 0
        self.full_frames = 0

    def frames(self) -> Iterator[tuple[float, np.ndarray]]:
        container = open_video(self.path)
        done = False
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            fps = float(stream.average_rate or stream.guessed_rate or Fraction(25))
            duration = _duration(container, stream)
            if self.max_seconds is not None and duration is not None:
                duration = min(duration, self.max_seconds)
            if self.keys:
                spread = self.sampled and duration is not None and duration > SPREAD_OVER_S
                self.watermark = _WatermarkReads(self.keys, duration, fps, spread)
            yield from self._decode(container, stream, fps, duration)
            done = True
        except READ_ERRORS as exc:
            raise decode_error(Path(self.path.name), exc) from None
        finally:
            try:
                if self.watermark is not None:
                    self.watermark.stop(failed=not done)
            finally:
                container.close()

    def _decode(self, container: Any, stream: Any, fps: float,
                duration: float | None) -> Iterator[tuple[float, np.ndarray]]:
        wm = self.watermark
        context = stream.codec_context
        full_now = True
        if self.sampled:
            full_now = wm is not None and wm.needs_full(0.0)
            context.skip_frame = "DEFAULT" if full_now else SAMPLED_DECODE
        time_base = stream.time_base
        first_pts: int | None = None
        size: tuple[int, int] | None = None
        next_t, last_t, last_ref = 0.0, -1.0, None
        for frame in container.decode(stream):
            if self.sampled and frame.pts is not None and time_base is not None:
                first_pts = frame.pts if first_pts is None else first_pts
                t = float((frame.pts - first_pts) * time_base)
            else:
                t = self.decoded / fps
            self.decoded += 1
            if self.max_seconds is not None and t > self.max_seconds:
                break
            self.full_frames += int(_is_bidir(frame))
            if self.sampled:
                want_full = wm is not None and wm.needs_full(t)
                if want_full != full_now:
                    context.skip_frame = "DEFAULT" if want_full else SAMPLED_DECODE
                    full_now = want_full
                if (last_ref is None and t > MAX_SAMPLED_GAP_S) or (
                        last_ref is not None and t - last_ref > MAX_SAMPLED_GAP_S):
                    raise _Thin()
                last_ref = t
            if wm is not None:
                wm.add(t, frame)
            if not self.fingerprint:
                continue
            if t + 0.5 / fps < next_t or t <= last_t:
                continue
            next_t, last_t = t + 1.0 / QUERY_FRAMES_PER_SECOND, t
            if size is None:
                size = grey_size(frame.width, frame.height)
            yield t, frame_grey(frame, size)
        if self.sampled and (last_ref is None or (duration is not None and duration - last_ref > MAX_SAMPLED_GAP_S
                                                  and (self.max_seconds is None or last_ref < self.max_seconds))):
            raise _Thin()


def _duration(container: Any, stream: Any) -> float | None:
    """Seconds from the video stream's first frame to its end, from the headers (None if unknown)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None and \
            stream.time_base is not None else 0.0
        return max(0.0, container.duration / 1_000_000 - start)
    return None


def _codec(path: Path) -> str:
    container = open_video(path)
    try:
        return str(container.streams.video[0].codec_context.name)
    finally:
        container.close()


def read_upload(path: Path, keys: Sequence[Any] = (), *, max_seconds: float | None = None,
                fingerprint: bool = True) -> SharedRead:
    """Decode `path` once for the watermark (when `keys`) and the fingerprint (when `fingerprint`).

    Raises `InvalidVideo` for what is not a decodable video, as each source's own read would.
    """
    if keys:
        # The watermark's small tensor work on one torch thread, as its own file read does: beside
        # the fingerprint's hashing threads and FFmpeg's, torch's pool made a 30 s 720p read take
        # 25-50 s instead of 5 whenever another process held a core (OpenMP workers spin-waiting).
        import torch

        from provenance.watermark._threads import one_thread

        with one_thread(torch.device("cpu")):
            return _read_upload(path, keys, max_seconds, fingerprint)
    return _read_upload(path, keys, max_seconds, fingerprint)


def _read_upload(path: Path, keys: Sequence[Any], max_seconds: float | None, fingerprint: bool) -> SharedRead:
    """`read_upload` proper."""
    sampled = _codec(path) in SAMPLED_CODECS
    restarted = False
    while True:
        one = _Pass(path, keys, max_seconds, sampled, fingerprint)
        try:
            frames = one.frames()
            if fingerprint:
                query = query_from_frames(prefetched(frames), path.name)
            else:
                for _ in frames:
                    pass
                query = None
        except _Thin:
            if not sampled:
                raise AssertionError("a full decode is never thin") from None
            sampled, restarted = False, True
            continue
        break
    out = SharedRead(fingerprint=query, decode={"sampled": sampled, "restarted_in_full": restarted,
                                                "frames_decoded": one.decoded, "b_frames_decoded": one.full_frames})
    if one.watermark is not None:
        out.decode["watermark_looks"] = "spread" if one.watermark.spread else "windows"
        out.watermark, out.windows = one.watermark.finish(path)
    return out
