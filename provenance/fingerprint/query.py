"""The sampled query side of fingerprinting: hash every half-second window of an upload to look it up.

An upload is decoded sampled (its bidirectional frames skipped), converted to work-size grey
from its luma plane, averaged over half-second windows every quarter second, and each window
hashed at 16 sub-crop variants (`hashing.query_hashes`), decoding on a thread of its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from ..errors import InvalidVideo
from ..video import READ_ERRORS, decode_error, open_video
from .hashing import QUERY_RATE, WINDOW_BINS_PER_SECOND, WORK_SIDE, WindowAverager, query_hashes

#: Frames a second the query side converts and averages (of all it decodes), for speed.
QUERY_FRAMES_PER_SECOND = 12


@dataclass(frozen=True)
class QueryFingerprint:
    """The query side: per sample (4 a second), the hashes of each query sub-crop, flipped and not."""

    times: np.ndarray  # float seconds, samples
    phash: np.ndarray  # uint64, samples × variants (QUERY_SCALES × (plain, flipped))
    dhash: np.ndarray
    informative: np.ndarray  # bool, samples

    @property
    def duration(self) -> float:
        """Seconds of video the samples span."""
        return float(self.times[-1]) + 1.0 / QUERY_RATE if self.times.size else 0.0


#: The sampled decode of an upload skips the frames no other frame references (FFmpeg
#: `skip_frame = NONREF`): the decoder drops them with no harm to any other frame, so every frame
#: that comes out is exactly what a full decode gives. It used to skip every B-frame (`BIDIR`),
#: but x264's B-pyramid (its default from the `medium` preset, the publisher's own encoder
#: included) makes some B-frames references that later P-frames predict from: skipping those left
#: the decoder concealing, and 39 of 43 sampled frames of a published clip differed from the full
#: decode (the query drifted 7.5-11 bits). NONREF keeps about half the frames of a typical H.264
#: upload (15 a second at 30 fps; a third with BIDIR) for about two thirds of the full decode time.
#: The windows average about QUERY_FRAMES_PER_SECOND frames a second; more move a half-second
#: mean very little.
SAMPLED_DECODE = "NONREF"
SAMPLED_CODEC_OPTIONS: dict[str, str] = {}

#: The sampled decode is judged by what comes out of it, not by the codec's name or the first
#: seconds: a gap longer than this between two sampled frames (or between the last one and the
#: clip's end) means the windows there would be empty or one frame thin, and the clip is decoded
#: in full from that point. An H.265 re-encode (x265's B-pyramid: its B-frames are references)
#: keeps only the first half second of frames when B-frames are skipped; a 4 fps clip keeps one
#: frame in three. A typical H.264 upload at 24-30 fps keeps a frame every 0.1-0.125 s.
MAX_SAMPLED_GAP_S = 0.4

#: 8-bit pixel formats whose first plane is the full-size luma (grey) picture.
_LUMA_FORMATS = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv440p",
                           "yuvj440p", "yuv411p", "yuv410p", "nv12", "nv21", "gray"})


def frame_grey(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    """The frame as work-size grey float32, from its luma plane when it has one (no colour conversion).

    The luma plane is the grey picture already; a box reduction of it costs a fraction of a
    colour-space conversion. Limited-range ("TV") luma is stretched to 0-255, like PIL's grey.
    """
    fmt = frame.format.name
    plane = frame.planes[0]
    if fmt not in _LUMA_FORMATS or plane.width != frame.width or plane.height != frame.height:
        grey = frame.reformat(width=size[0], height=size[1], format="gray", interpolation="AREA").to_ndarray()
        return grey.astype(np.float32)
    luma = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
    image = Image.fromarray(np.ascontiguousarray(luma))
    factor = min(image.width // size[0], image.height // size[1])
    if factor > 1:
        image = image.reduce(factor)
    if image.size != size:
        image = image.resize(size, Image.Resampling.BOX)
    grey = np.asarray(image, dtype=np.float32)
    if fmt != "gray" and not fmt.startswith("yuvj") and frame.color_range != 2:  # 2: AVCOL_RANGE_JPEG
        grey = np.clip((grey - 16.0) * (255.0 / 219.0), 0.0, 255.0)
    return grey


def grey_size(width: int, height: int) -> tuple[int, int]:
    """The work size (width, height) the query converts a `width`×`height` clip's frames to."""
    factor = min(1.0, WORK_SIDE / max(width, height))
    return max(1, round(width * factor)), max(1, round(height * factor))


def _grey_frames(path: Path, max_seconds: float | None, *,
                 sampled: bool = True) -> Iterator[tuple[float, np.ndarray]]:
    """Decode `path` and yield (time, work-size grey frame), about 12 frames a second.

    `sampled` asks the decoder to skip non-reference frames; times then come from each frame's
    presentation time (counting frames would be wrong once some are skipped), relative to the
    first frame, with the counted time as the fallback for frames without one.
    """
    container = open_video(path)  # InvalidVideo for what is not a readable video
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if sampled:
            # Added to (not instead of) what open_video set: FFmpeg's frame-size limit stays.
            stream.codec_context.options = {**stream.codec_context.options, **SAMPLED_CODEC_OPTIONS}
            stream.codec_context.skip_frame = SAMPLED_DECODE
        fps = float(stream.average_rate or stream.guessed_rate or Fraction(25))
        time_base = stream.time_base
        count = 0
        first_pts: int | None = None
        last_t = -1.0
        next_t = 0.0  # the next time a frame is converted (QUERY_FRAMES_PER_SECOND of them)
        size: tuple[int, int] | None = None
        try:
            for frame in container.decode(stream):
                if sampled and frame.pts is not None and time_base is not None:
                    if first_pts is None:
                        first_pts = frame.pts
                    t = float((frame.pts - first_pts) * time_base)
                else:
                    # Frame order and the nominal rate give the time: edit lists and odd time bases
                    # of uploaded files make pts less reliable than counting.
                    t = count / fps
                count += 1
                if max_seconds is not None and t > max_seconds:
                    break
                if t + 0.5 / fps < next_t or t <= last_t:
                    continue  # decoded (the codec needs it) but not converted: the window mean barely moves
                next_t = t + 1.0 / QUERY_FRAMES_PER_SECOND
                last_t = t
                if size is None:
                    size = grey_size(frame.width, frame.height)
                yield t, frame_grey(frame, size)
        except READ_ERRORS as exc:
            raise decode_error(Path(path.name), exc) from None
    finally:
        container.close()


def _clip_end(path: Path) -> float | None:
    """Seconds from the video stream's first frame to its end, from the container (None if unknown)."""
    container = open_video(path)
    try:
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            start = float(stream.start_time * stream.time_base) if stream.start_time is not None and \
                stream.time_base is not None else 0.0
            return max(0.0, container.duration / 1_000_000 - start)
        return None
    finally:
        container.close()


def _frames_for_query(path: Path, max_seconds: float | None, sampled: bool) -> Iterator[tuple[float, np.ndarray]]:
    """The query's grey frames, streamed: sampled while that leaves frames every MAX_SAMPLED_GAP_S.

    What actually came out decides: at the first gap longer than MAX_SAMPLED_GAP_S (or when the
    sampled frames end that long before the clip does) the clip is decoded in full and its frames
    after the last sampled one are yielded instead. The frames already yielded stay (they are the
    same frames a full decode gives there); the full decode restarts from the top, so a clip that
    thins out late costs its head twice, and one that is thin at once costs a full decode.
    """
    if not sampled:
        yield from _grey_frames(path, max_seconds, sampled=False)
        return
    end = _clip_end(path)
    if max_seconds is not None and end is not None:
        end = min(end, max_seconds)
    last: float | None = None
    frames = _grey_frames(path, max_seconds, sampled=True)
    thin = False
    for t, grey in frames:
        if (last is None and t > MAX_SAMPLED_GAP_S) or (last is not None and t - last > MAX_SAMPLED_GAP_S):
            thin = True
            break
        yield t, grey
        last = t
    frames.close()
    if not thin:
        # The sampled frames stopped: at the clip's end, or (an H.265 B-pyramid) long before it.
        thin = last is None or (end is not None and end - last > MAX_SAMPLED_GAP_S)
    if not thin:
        return
    for t, grey in _grey_frames(path, max_seconds, sampled=False):
        if last is None or t > last + 1e-6:
            yield t, grey


def prefetched(frames: Iterator[tuple[float, np.ndarray]], depth: int = 24) -> Iterator[tuple[float, np.ndarray]]:
    """`frames`, decoded on a thread of their own while the caller hashes the ones before.

    Decoding (FFmpeg) and hashing (PIL, SciPy) both release the GIL, so on two cores the query
    costs about the longer of the two instead of their sum. The queue is bounded (a few frames
    of memory); an error while decoding is raised here, in the caller's thread.
    """
    import queue
    import threading

    items: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in frames:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            items.put(exc)
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()  # the container is closed by the thread that read it

    thread = threading.Thread(target=produce, name="fingerprint-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join(timeout=5)


def query_fingerprint(path: Path, *, max_seconds: float | None = None, sampled: bool = True) -> QueryFingerprint:
    """Hash every half-second window (every quarter second) of a clip, to look it up.

    `sampled` (the default) decodes only the upload's reference frames (`SAMPLED_DECODE`): the
    windows are means of about 12 frames a second whatever the source rate, so the frames a codec
    can drop add decode time and nothing to the hash. A clip whose sampled decode is too thin
    (a low frame rate of mostly droppable frames) is decoded in full.
    """
    with ThreadPoolExecutor(max_workers=HASH_WORKERS, thread_name_prefix="fingerprint-hash") as pool:
        return _query(path, max_seconds, sampled, pool)


#: Threads hashing windows while the decode thread reads on (PIL's resizes and SciPy's DCT release
#: the GIL): on the two cores of a small box the hashing, most of a query's work, uses both.
HASH_WORKERS = 2


def _query(path: Path, max_seconds: float | None, sampled: bool, pool: ThreadPoolExecutor) -> QueryFingerprint:
    """`query_fingerprint` proper: windows are hashed on `pool`, in order, a bounded number ahead."""
    return _hash_frames(prefetched(_frames_for_query(path, max_seconds, sampled)), path.name, pool)


def query_from_frames(frames: Iterator[tuple[float, np.ndarray]], name: str = "the clip") -> QueryFingerprint:
    """The query fingerprint of (time, work-size grey) frames decoded elsewhere (the detector's shared decode).

    The frames must be what `query_fingerprint` would convert: `frame_grey` of about
    `QUERY_FRAMES_PER_SECOND` frames a second, times from the first frame. Hashing runs on
    `HASH_WORKERS` threads while the caller's iterator decodes on.
    """
    with ThreadPoolExecutor(max_workers=HASH_WORKERS, thread_name_prefix="fingerprint-hash") as pool:
        return _hash_frames(frames, name, pool)


def _hash_frames(frames: Iterator[tuple[float, np.ndarray]], name: str,
                 pool: ThreadPoolExecutor) -> QueryFingerprint:
    """Average `frames` into half-second windows and hash each on `pool`, in order."""
    windows = WindowAverager()
    times: list[float] = []
    rows: list[Future[tuple[np.ndarray, np.ndarray, bool]]] = []
    next_bin = 0

    def hashed(grey: np.ndarray) -> Future[tuple[np.ndarray, np.ndarray, bool]]:
        if len(rows) > 2 * HASH_WORKERS:
            rows[-2 * HASH_WORKERS].result()  # at most a few windows wait in memory
        return pool.submit(query_hashes, grey)

    def emit_until(last_complete_bin: int) -> None:
        nonlocal next_bin
        while next_bin + 1 <= last_complete_bin:
            grey = windows.window(next_bin)
            if grey is not None:
                times.append(next_bin / WINDOW_BINS_PER_SECOND)
                rows.append(hashed(grey))
            windows.pop_before(next_bin + 1)
            next_bin += 1

    for t, grey in frames:
        windows.add(t, grey)
        emit_until(math.floor(t * WINDOW_BINS_PER_SECOND + 1e-6) - 1)
    bins = windows.bins
    if bins:
        # Windows that end with the clip: a short clip still gets its samples.
        last = bins[-1]
        emit_until(last)
        if not rows or next_bin <= last:
            grey = windows.window(next_bin)
            if grey is not None:
                times.append(next_bin / WINDOW_BINS_PER_SECOND)
                rows.append(hashed(grey))
    if not rows:
        raise InvalidVideo(f"{name}: the video stream holds no decodable frame")
    done = [r.result() for r in rows]
    return QueryFingerprint(np.array(times), np.stack([r[0] for r in done]), np.stack([r[1] for r in done]),
                            np.array([r[2] for r in done], dtype=bool))
