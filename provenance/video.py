"""Video I/O through PyAV: probe, stream frames, and write H.264.

Frames are RGB `uint8` arrays of shape H×W×3. Reading is a generator so that memory does not
grow with the length of a clip; everything downstream (watermark, fingerprints) streams too.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from .errors import InvalidVideo, OutputNotWritable
from .video_limits import DecodeLimits, bounded_decode, check_declared, configure_decoder, process_limits

#: Containers that C2PA can carry a manifest in, by file extension, with their MIME types.
SIGNABLE_MIME: dict[str, str] = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mov": "video/quicktime",
    ".avi": "video/x-msvideo",
}

MIN_SIDE = 16

#: What PyAV raises for a file that is not a readable video: FFmpeg's errors (which include its
#: EOF and invalid-data errors), and the Python errors its bindings raise on damaged headers
#: (odd pixel formats, undecodable metadata). Readers turn them into `InvalidVideo`.
READ_ERRORS: tuple[type[BaseException], ...] = (av.error.FFmpegError, UnicodeDecodeError, ValueError,
                                                NotImplementedError)


@dataclass(frozen=True)
class VideoInfo:
    """What a caller needs to know about a clip before decoding it."""

    width: int
    height: int
    fps: float
    frames: int
    duration_s: float
    codec: str
    container: str


def open_video(path: Path, limits: DecodeLimits | None = None) -> av.container.InputContainer:
    """Open a clip for reading; `InvalidVideo` naming why for anything that is not a decodable video.

    Its video decoder is bounded before anything decodes (`video_limits.configure_decoder`:
    FFmpeg refuses frames over the frame limit, threads sized to the frames), with `limits` or
    the process's. The caller closes the container it gets.
    """
    if not path.exists():
        raise InvalidVideo(f"{path}: no such file")
    if path.is_dir():
        raise InvalidVideo(f"{path}: is a directory, not a video file")
    if path.stat().st_size == 0:
        raise InvalidVideo(f"{path}: the file is empty")
    bounds = limits or process_limits()
    try:
        # Opening probes the streams, which decodes a frame or two: FFmpeg's frame-size limit applies
        # there too (without it, the probe of a 16384x8704 header alone peaks near 400 MB).
        container = av.open(str(path), mode="r", options={"max_pixels": str(bounds.max_frame_pixels)})
    except READ_ERRORS as exc:
        raise InvalidVideo(f"{path}: not a readable video (not a video, or corrupt or truncated: "
                           f"{exc.__class__.__name__})") from None
    if not container.streams.video:
        container.close()
        raise InvalidVideo(f"{path}: the file has no video stream")
    if container.streams.video[0].codec_context is None:
        # A damaged codec tag or parameters: FFmpeg has no decoder to give the stream.
        container.close()
        raise InvalidVideo(f"{path}: the video stream's codec cannot be decoded (corrupt or unsupported)")
    context = container.streams.video[0].codec_context
    try:
        # The size the headers (the codec's own, e.g. the H.264 SPS) declare, refused before a decoder
        # opens: opening one on a 16384x8704 header alone costs about 400 MB.
        bounds.check_frame(context.width, context.height, str(path))
    except InvalidVideo:
        container.close()
        raise
    configure_decoder(container.streams.video[0], limits)
    return container


def decode_error(path: Path, exc: BaseException) -> InvalidVideo:
    """What a failed decode means: damaged data, or a frame FFmpeg refused because it is over the limit."""
    box = process_limits().frame_box
    return InvalidVideo(f"{path}: the video data is corrupt or truncated, or a frame is over the {box[0]}x{box[1]} "
                        f"frame limit ({exc})")


def probe(path: Path, *, decode_check: bool = True, limits: DecodeLimits | None = None) -> VideoInfo:
    """Describe a clip, and with `decode_check` prove that its frames really decode.

    Headers alone lie about truncated files, so the check decodes every packet (cheap next to
    anything we then do with the clip) and fails if the stream ends early or is corrupt. With
    `limits`, what the headers declare is checked against them first, before any decoder opens
    (`VideoTooLarge` over the budget, `InvalidVideo` for an absurd declaration).
    """
    container = open_video(path, limits)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        fps = float(rate)
        width, height = stream.codec_context.width, stream.codec_context.height
        if limits is not None:
            declared = stream.frames or 0
            seconds = declared / fps if declared and fps else float(container.duration or 0) / 1e6
            check_declared(VideoInfo(width, height, fps, declared, seconds, stream.codec_context.name,
                                     container.format.name), limits, str(path))
        frames = 0
        if decode_check:
            try:
                for frame in bounded_decode(container, stream, limits, str(path)):
                    width, height = frame.width, frame.height
                    frames += 1
            except READ_ERRORS as exc:
                raise decode_error(path, exc) from None
            if frames == 0:
                raise InvalidVideo(f"{path}: the video stream holds no decodable frame")
        else:
            frames = stream.frames or 0
        if width < MIN_SIDE or height < MIN_SIDE:
            raise InvalidVideo(f"{path}: {width}x{height} is too small (minimum {MIN_SIDE}px a side)")
        duration = frames / fps if frames and fps else float(container.duration or 0) / 1e6
        return VideoInfo(width, height, fps, frames, duration, stream.codec_context.name,
                         container.format.name)
    finally:
        container.close()


def converter() -> VideoReformatter:
    """A swscale converter to keep for a whole clip: `converter().reformat(frame, ...)`.

    `VideoFrame.reformat` / `to_ndarray(format=...)` build a new swscale context for every frame;
    reusing one gives the same pixels for a third of the cost (720p to RGB 0.58 ms instead of
    1.46; to working-size grey 0.42 instead of 1.55). Not thread-safe: one per reading thread.
    """
    return VideoReformatter()


def iter_frames(path: Path) -> Iterator[np.ndarray]:
    """Yield the clip's frames as RGB uint8 arrays, one at a time."""
    container = open_video(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        to_rgb = converter()
        try:
            for frame in bounded_decode(container, stream, where=str(path)):
                yield to_rgb.reformat(frame, format="rgb24").to_ndarray()
        except READ_ERRORS as exc:
            raise decode_error(path, exc) from None
    finally:
        container.close()


def frame_rate(path: Path) -> float:
    """The clip's average frame rate (frames per second)."""
    container = open_video(path)
    try:
        stream = container.streams.video[0]
        return float(stream.average_rate or stream.guessed_rate or 25)
    finally:
        container.close()


class VideoWriter:
    """Encode RGB frames to an MP4/MOV file (H.264, yuv420p), as a context manager.

    The size is taken from the first frame and rounded down to even numbers, which yuv420p
    requires. `crf` 18 is visually lossless, the default for published clips.
    """

    def __init__(self, path: Path, fps: float, *, codec: str = "libx264", crf: int = 18,
                 preset: str = "medium", pix_fmt: str = "yuv420p") -> None:
        self.path = Path(path)
        self.fps = fps
        self.codec = codec
        self.crf = crf
        self.preset = preset
        self.pix_fmt = pix_fmt
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self.frames_written = 0

    def __enter__(self) -> VideoWriter:
        try:
            self._container = av.open(str(self.path), mode="w")
        except (av.error.FFmpegError, OSError) as exc:
            raise OutputNotWritable(f"{self.path}: cannot write ({exc})") from None
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append one H×W×3 uint8 RGB frame."""
        assert self._container is not None, "use VideoWriter as a context manager"
        if self._stream is None:
            h, w = frame.shape[0] // 2 * 2, frame.shape[1] // 2 * 2
            rate = Fraction(self.fps).limit_denominator(1001)
            self._stream = self._container.add_stream(self.codec, rate=rate)
            self._stream.width, self._stream.height = w, h
            self._stream.pix_fmt = self.pix_fmt
            options = {"crf": str(self.crf)}
            if self.codec in ("libx264", "libx265"):
                options["preset"] = self.preset
            if self.codec == "libx265":
                options["x265-params"] = "log-level=error"
            if self.codec == "libvpx-vp9":
                options = {"crf": str(self.crf), "b": "0", "deadline": "realtime", "cpu-used": "8"}
            self._stream.options = options
        h, w = self._stream.height, self._stream.width
        data = np.ascontiguousarray(frame[:h, :w, :3], dtype=np.uint8)
        video_frame = av.VideoFrame.from_ndarray(data, format="rgb24")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.frames_written += 1

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        container, self._container = self._container, None
        if container is None:
            return
        try:
            if self._stream is not None and exc_type is None:
                for packet in self._stream.encode(None):
                    container.mux(packet)
        finally:
            container.close()


def write_video(path: Path, frames: Iterator[np.ndarray] | np.ndarray, fps: float, **options: object) -> int:
    """Encode all `frames` to `path`; returns the number of frames written."""
    with VideoWriter(path, fps, **options) as writer:  # type: ignore[arg-type]
        for frame in frames:
            writer.write(frame)
        if writer.frames_written == 0:
            raise InvalidVideo("no frames to write")
        return writer.frames_written


def duration_frames(seconds: float, fps: float) -> int:
    """Number of whole frames that cover `seconds` at `fps` (at least one)."""
    return max(1, math.ceil(seconds * fps - 1e-9))
