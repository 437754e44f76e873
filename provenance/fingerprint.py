"""Perceptual fingerprints of published clips: per-second hashes that survive crops, bars and flips.

Plain per-frame hashes (PDQ, vPDQ, one pHash per frame) match re-encodes and resizes but lose
every crop, letterbox and flip (the research notes measured 0% on 80-90% centre crops). Here
each second of video is the mean of its middle half second (robust to where a query's samples
fall), and stores the 64-bit imagehash pHash and dHash of six *regions* of it, taken after
removing uniform bars:

* the whole content, and its centred 68% (centre crops of 68-100% are then found by the query
  trying its own centred sub-crops at 6 scales: one of them lands on the stored 68% region);
* the centred 68% of the largest centred 1:1 and 9:16 (or 16:9 for portrait) regions, for
  clips reframed to another aspect ratio and then cropped;
* the top and the bottom half, one of which survives a sticker or a caption.

The published side stays small (6 hashes of 16 bytes a second); the query side does the
searching: it hashes every half-second window (every quarter second), bars removed, at 6
centred sub-crops and both halves, mirrored and not (16 variants). Flat and dark samples carry
no usable hash and are marked uninformative on both sides, so a black or single-colour clip can
never match anything.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import scipy.fft
from PIL import Image

from .errors import InvalidVideo
from .video import READ_ERRORS, _open

#: Identifies the fingerprint scheme (and its parameters) in the ledger and the soft-binding API.
ALGORITHM = "org.credence.fingerprint.phash-multicrop.1"

#: Frames are reduced to grey and to at most this many pixels a side before anything else.
WORK_SIDE = 256

#: Stored regions, as (aspect, scale): aspect None is the content's own aspect ratio.
#: Aspect "top"/"bottom" is that half of the content: what survives a sticker or caption.
STORED_REGIONS: tuple[tuple[float | str | None, float], ...] = (
    (None, 1.0), (None, 0.68), (1.0, 0.68), (9 / 16, 0.68), ("top", 1.0), ("bottom", 1.0))

#: The centred sub-crops a query tries of itself (scale of each side); then its top and bottom
#: halves; then all of them mirrored.
QUERY_SCALES: tuple[float, ...] = (1.0, 0.93, 0.86, 0.8, 0.74, 0.68)
QUERY_VARIANTS = 2 * (len(QUERY_SCALES) + 2)

#: Query samples per second of video (the published side keeps one per second).
QUERY_RATE = 4.0

#: Frames a second the query side converts and averages (of all it decodes), for speed.
QUERY_FRAMES_PER_SECOND = 12

#: A sample is informative when its grey content varies this much (0-255 units): flat, dark and
#: nearly uniform frames give hashes that are noise, and noise must never accuse anyone.
MIN_CONTRAST = 10.0
MIN_DETAIL = 1.2

#: Rows and columns at the borders within this of the edge's grey are bars (letterbox, pads);
#: bars darker than DARK_BAR may be half covered by an overlay.
BAR_SPREAD = 6.0
DARK_BAR = 24.0


@dataclass(frozen=True)
class ClipFingerprint:
    """The published side: per second, the pHash and dHash of each stored region, and quality."""

    phash: np.ndarray  # uint64, seconds × regions
    dhash: np.ndarray  # uint64, seconds × regions
    informative: np.ndarray  # bool, seconds

    @property
    def seconds(self) -> int:
        """Number of sampled seconds."""
        return int(self.phash.shape[0])

    def hashes_blob(self) -> bytes:
        """pHashes then dHashes, big-endian uint64: bytes never overflow a signed BIGINT."""
        return self.phash.astype(">u8").tobytes() + self.dhash.astype(">u8").tobytes()

    def informative_blob(self) -> bytes:
        """One byte a second: 1 where the sample is informative."""
        return self.informative.astype(np.uint8).tobytes()

    @classmethod
    def from_blobs(cls, hashes: bytes, informative: bytes, regions: int) -> ClipFingerprint:
        """Inverse of `hashes_blob` / `informative_blob`."""
        seconds = len(informative)
        values = np.frombuffer(hashes, dtype=">u8").astype(np.uint64)
        if values.size != 2 * seconds * regions:
            raise ValueError(f"fingerprint blob holds {values.size} hashes, expected {2 * seconds * regions}")
        phash = values[: seconds * regions].reshape(seconds, regions)
        dhash = values[seconds * regions:].reshape(seconds, regions)
        return cls(phash, dhash, np.frombuffer(informative, dtype=np.uint8).astype(bool))


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


# -- hashing ---------------------------------------------------------------------------------
def to_work_grey(frame: np.ndarray) -> np.ndarray:
    """An RGB uint8 frame as grey float32, at most WORK_SIDE pixels a side (box filter)."""
    image = Image.fromarray(frame).convert("L")
    return _shrink(image)


def _shrink(image: Image.Image) -> np.ndarray:
    w, h = image.size
    factor = WORK_SIDE / max(w, h)
    if factor < 1:
        image = image.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.float32)


def content_box(grey: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the frame without uniform bars at its edges.

    Letterbox and pillarbox bars are removed, so that a padded copy hashes like the original.
    A line is a bar when nearly all of it has the edge's colour, or, for dark bars, when half
    of it does: a sticker or caption laid over a black bar must not hide the bar. Never trims
    more than 40% a side: a dark scene is not a bar.
    """

    def trim(lines: np.ndarray) -> tuple[int, int]:
        n = lines.shape[0]
        limit = int(n * 0.4)

        def edge_colour(line: np.ndarray) -> tuple[float, float]:
            # The median, and the darker quartile: a half-covered black bar's own colour.
            return float(np.median(line)), float(np.percentile(line, 25))

        def is_bar(line: np.ndarray, ref: tuple[float, float]) -> bool:
            if float(np.mean(np.abs(line - ref[0]) < BAR_SPREAD)) >= 0.97:
                return True
            return ref[1] < DARK_BAR and float(np.mean(np.abs(line - ref[1]) < BAR_SPREAD)) >= 0.45

        start, ref = 0, edge_colour(lines[0])
        while start < limit and is_bar(lines[start], ref):
            start += 1
        end, ref = n, edge_colour(lines[-1])
        while n - end < limit and is_bar(lines[end - 1], ref):
            end -= 1
        # A bar of a pixel or two is more likely a dark edge of the picture or a codec artefact.
        if start <= 1:
            start = 0
        if n - end <= 1:
            end = n
        return start, end

    top, bottom = trim(grey)
    left, right = trim(grey.T)
    return top, bottom, left, right


def region(grey: np.ndarray, aspect: float | str | None, scale: float) -> np.ndarray:
    """The centred region of `grey` with the given aspect (width/height; None keeps it) and scale.

    Aspect "top" or "bottom" is that half of the frame instead.
    """
    h, w = grey.shape
    if aspect == "top":
        return grey[: max(1, h // 2)]
    if aspect == "bottom":
        return grey[h // 2:]
    rw, rh = float(w), float(h)
    if aspect is not None:
        if w / h > aspect:
            rw = h * aspect
        else:
            rh = w / aspect
    rw, rh = max(1.0, rw * scale), max(1.0, rh * scale)
    x0, y0 = (w - rw) / 2, (h - rh) / 2
    return grey[round(y0): round(y0 + rh) or 1, round(x0): round(x0 + rw) or 1]


def _resize(grey: np.ndarray, size: tuple[int, int], method: Image.Resampling) -> np.ndarray:
    return np.asarray(Image.fromarray(grey, mode="F").resize(size, method), dtype=np.float64)


def _pack(bits: np.ndarray) -> np.ndarray:
    """Rows of 64 booleans as uint64, first bit most significant (imagehash's hex order)."""
    packed = np.packbits(bits.reshape(bits.shape[0], 64).astype(np.uint8), axis=1)
    return packed.view(">u8").reshape(-1).astype(np.uint64)


def hash_regions(regions: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """imagehash's 64-bit pHash and dHash of each grey region, batched.

    Same algorithm as `imagehash.phash` (32×32 Lanczos, 2-D DCT, 8×8 low band against its
    median) and `imagehash.dhash` (9×8, left-right gradient sign), resampled in float rather than
    uint8; the tests check the pHash bit for bit and the dHash to within near-ties.
    """
    # One PIL image per region, resized twice (the array-to-image copy was a third of the cost).
    images = [Image.fromarray(r, mode="F") for r in regions]
    small = np.stack([np.asarray(im.resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64) for im in images])
    dct = scipy.fft.dct(scipy.fft.dct(small, axis=1), axis=2)[:, :8, :8].reshape(len(regions), 64)
    p_bits = dct > np.median(dct, axis=1, keepdims=True)
    tiny = np.stack([np.asarray(im.resize((9, 8), Image.Resampling.LANCZOS), dtype=np.float64) for im in images])
    d_bits = tiny[:, :, 1:] > tiny[:, :, :-1]
    return _pack(p_bits), _pack(d_bits)


def informative(grey: np.ndarray) -> bool:
    """Whether the content has enough contrast and detail for its hash to mean anything."""
    if grey.size == 0 or min(grey.shape) < 8:
        return False
    small = _resize(grey, (32, 32), Image.Resampling.BOX)
    detail = float(np.abs(np.diff(small, axis=0)).mean() + np.abs(np.diff(small, axis=1)).mean())
    spread = float(np.percentile(small, 95) - np.percentile(small, 5))
    return spread >= MIN_CONTRAST and detail >= MIN_DETAIL


def stored_hashes(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """The published side's hashes of one sample: one pHash and dHash per STORED_REGIONS entry."""
    top, bottom, left, right = content_box(grey)
    content = grey[top:bottom, left:right]
    portrait = content.shape[0] > content.shape[1]
    regions = []
    for aspect, scale in STORED_REGIONS:
        if isinstance(aspect, float) and portrait and aspect < 1:
            aspect = 1 / aspect  # a portrait clip is reframed to landscape, not to a thinner portrait
        regions.append(region(content, aspect, scale))
    phash, dhash = hash_regions(regions)
    return phash, dhash, informative(content)


def query_hashes(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """The query side's hashes of one sample: each QUERY_SCALES sub-crop, then the same flipped."""
    top, bottom, left, right = content_box(grey)
    content = grey[top:bottom, left:right]
    regions = [region(content, None, s) for s in QUERY_SCALES]
    regions += [region(content, "top", 1.0), region(content, "bottom", 1.0)]
    regions += [np.ascontiguousarray(r[:, ::-1]) for r in regions]
    phash, dhash = hash_regions(regions)
    return phash, dhash, informative(content)


# -- temporal windows ------------------------------------------------------------------------
class WindowAverager:
    """Averages grey frames over half-second windows that start every quarter second.

    A single frame a second is fragile: in a moving shot, a frame 0.1 s away already differs
    by 10-20 bits. The mean of half a second moves slowly, so a query sampled a little off the
    published instants (a sub-clip starting anywhere, another frame rate) still lands close.
    """

    def __init__(self) -> None:
        self._sums: dict[int, np.ndarray] = {}
        self._counts: dict[int, int] = {}
        self._shape: tuple[int, int] | None = None

    def add(self, t: float, grey: np.ndarray) -> None:
        """Add the frame shown at time `t` (seconds)."""
        if self._shape is None:
            self._shape = grey.shape
        elif grey.shape != self._shape:
            grey = _resize(grey.astype(np.float32), (self._shape[1], self._shape[0]), Image.Resampling.BOX)
        b = math.floor(t * WINDOW_BINS_PER_SECOND + 1e-6)
        if b in self._sums:
            self._sums[b] += grey
            self._counts[b] += 1
        else:
            self._sums[b] = grey.astype(np.float64)
            self._counts[b] = 1

    def pop_before(self, bin_index: int) -> None:
        """Forget bins older than `bin_index` (memory stays bounded while streaming)."""
        for b in [b for b in self._sums if b < bin_index]:
            del self._sums[b], self._counts[b]

    def window(self, first_bin: int) -> np.ndarray | None:
        """Mean of the frames in bins first_bin and first_bin + 1, or None when both are empty."""
        parts = [b for b in (first_bin, first_bin + 1) if b in self._sums]
        if not parts:
            return None
        total = sum(self._sums[b] for b in parts)
        return (total / sum(self._counts[b] for b in parts)).astype(np.float32)

    @property
    def bins(self) -> list[int]:
        """Bins that hold frames, in order."""
        return sorted(self._sums)


#: Window bins a second (a window spans two bins, half a second).
WINDOW_BINS_PER_SECOND = 4


# -- the published side ----------------------------------------------------------------------
class FingerprintRecorder:
    """A `FrameRecorder` for the publisher: hashes one half-second window per second of video.

    Second k is the mean of the frames in [k + 0.25, k + 0.75); a clip shorter than that keeps
    the mean of what it has. Memory stays a few work-size frames whatever the clip's length.
    """

    def __init__(self, fps: float) -> None:
        self.fps = fps if fps > 0 else 25.0
        self._windows = WindowAverager()
        self._done = 0  # seconds already hashed
        self._rows: list[tuple[np.ndarray, np.ndarray, bool]] = []

    def add(self, frame: np.ndarray, index: int) -> None:
        """See one released frame (in order)."""
        t = index / self.fps
        second = int(t)
        # Frames of a later second close the windows of the seconds before it.
        while self._done < second:
            self._hash_second(self._done)
        self._windows.add(t, to_work_grey(frame))

    def _hash_second(self, second: int) -> None:
        grey = self._windows.window(second * WINDOW_BINS_PER_SECOND + 1)
        if grey is not None:
            self._rows.append(stored_hashes(grey))
        self._windows.pop_before((second + 1) * WINDOW_BINS_PER_SECOND)
        self._done = second + 1

    def fingerprint(self) -> ClipFingerprint:
        """The fingerprint of the frames seen so far (closes the last second)."""
        bins = self._windows.bins
        # A clip too short to fill the window of its first second keeps the mean of what it has.
        fallback = self._windows.window(bins[0]) if bins and not self._rows else None
        if bins:
            self._hash_second(max(self._done, bins[-1] // WINDOW_BINS_PER_SECOND))
        if not self._rows and fallback is not None:
            self._rows.append(stored_hashes(fallback))
        if not self._rows:
            raise InvalidVideo("no frames to fingerprint")
        rows, self._rows = self._rows, []
        return ClipFingerprint(np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]),
                               np.array([r[2] for r in rows], dtype=bool))

    def records(self, generation_id: str) -> list[object]:
        """The ledger row holding this clip's fingerprint."""
        from .ledger.models import Fingerprint

        fp = self.fingerprint()
        return [Fingerprint(generation_id=generation_id, algorithm=ALGORITHM, seconds=fp.seconds,
                            regions=len(STORED_REGIONS), hashes=fp.hashes_blob(),
                            informative=fp.informative_blob())]


def fingerprint_recorder(fps: float) -> FingerprintRecorder:
    """The recorder factory the publisher takes (`recorders=[fingerprint_recorder]`)."""
    return FingerprintRecorder(fps)


def fingerprint_frames(frames: Iterator[np.ndarray] | list[np.ndarray], fps: float) -> ClipFingerprint:
    """The published-side fingerprint of frames (what the recorder stores at publish time)."""
    recorder = FingerprintRecorder(fps)
    for index, frame in enumerate(frames):
        recorder.add(frame, index)
    return recorder.fingerprint()


# -- the query side --------------------------------------------------------------------------
#: The sampled decode of an upload skips its bidirectional frames (FFmpeg `skip_frame = BIDIR`)
#: and the deblocking filter. B-frames are never references for I/P-frames, so the decoder drops
#: them with no harm to any other frame: a typical H.264 upload keeps about a third of its frames
#: (10 a second at 30 fps) for a quarter of the full decode time. The windows average about
#: QUERY_FRAMES_PER_SECOND frames a second; more frames move a half-second mean very little,
#: and the loop filter only smooths block edges a 256-pixel grey frame averages away anyway.
SAMPLED_DECODE = "BIDIR"
SAMPLED_CODEC_OPTIONS: dict[str, str] = {}

#: Below this many decoded frames a second, the sampled decode is too thin for half-second
#: windows (a low frame rate, or an unusual GOP of mostly B-frames): the clip is decoded in full.
MIN_SAMPLED_FPS = 6.0


#: 8-bit pixel formats whose first plane is the full-size luma (grey) picture.
_LUMA_FORMATS = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv440p",
                           "yuvj440p", "yuv411p", "yuv410p", "nv12", "nv21", "gray"})


def _frame_grey(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
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


def _grey_frames(path: Path, max_seconds: float | None, *,
                 sampled: bool = True) -> Iterator[tuple[float, np.ndarray]]:
    """Decode `path` and yield (time, work-size grey frame), about 12 frames a second.

    `sampled` asks the decoder to skip non-reference frames; times then come from each frame's
    presentation time (counting frames would be wrong once some are skipped), relative to the
    first frame, with the counted time as the fallback for frames without one.
    """
    container = _open(path)  # InvalidVideo for what is not a readable video
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if sampled:
            stream.codec_context.options = dict(SAMPLED_CODEC_OPTIONS)
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
                    w, h = frame.width, frame.height
                    factor = min(1.0, WORK_SIDE / max(w, h))
                    size = (max(1, round(w * factor)), max(1, round(h * factor)))
                yield t, _frame_grey(frame, size)
        except READ_ERRORS as exc:
            raise InvalidVideo(f"{path.name}: the video data is corrupt or truncated ({exc})") from None
    finally:
        container.close()


#: Seconds of a sampled decode looked at before trusting its frame rate.
SAMPLED_PROBE_SECONDS = 2.0


def _frames_for_query(path: Path, max_seconds: float | None, sampled: bool) -> Iterator[tuple[float, np.ndarray]]:
    """The query's grey frames, streamed: sampled when that leaves enough frames a second.

    The first SAMPLED_PROBE_SECONDS of a sampled decode are held back and counted; too few
    frames a second for the half-second windows, and the clip is decoded in full instead.
    """
    if not sampled:
        yield from _grey_frames(path, max_seconds, sampled=False)
        return
    frames = _grey_frames(path, max_seconds, sampled=True)
    head: list[tuple[float, np.ndarray]] = []
    for item in frames:
        head.append(item)
        if item[0] >= SAMPLED_PROBE_SECONDS:
            break
    span = head[-1][0] - head[0][0] if head else 0.0
    thin = len(head) < 2 or (span > 0 and (len(head) - 1) / span < MIN_SAMPLED_FPS)
    if thin:
        frames.close()
        yield from _grey_frames(path, max_seconds, sampled=False)
        return
    yield from head
    yield from frames


def _prefetched(frames: Iterator[tuple[float, np.ndarray]], depth: int = 24) -> Iterator[tuple[float, np.ndarray]]:
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
    frames = _prefetched(_frames_for_query(path, max_seconds, sampled))
    windows = WindowAverager()
    times: list[float] = []
    rows: list[tuple[np.ndarray, np.ndarray, bool]] = []
    next_bin = 0

    def emit_until(last_complete_bin: int) -> None:
        nonlocal next_bin
        while next_bin + 1 <= last_complete_bin:
            grey = windows.window(next_bin)
            if grey is not None:
                times.append(next_bin / WINDOW_BINS_PER_SECOND)
                rows.append(query_hashes(grey))
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
                rows.append(query_hashes(grey))
    if not rows:
        raise InvalidVideo(f"{path.name}: the video stream holds no decodable frame")
    return QueryFingerprint(np.array(times), np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]),
                            np.array([r[2] for r in rows], dtype=bool))


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance of uint64 arrays (broadcasting)."""
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int16)
