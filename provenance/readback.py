"""Watermark read-back at publish (issue 22): never release a clip whose mark cannot be read.

After the final encode and signature, the publisher hands the signed temporary (the exact bytes
that will be released) to a `MarkReader`, which detects the mark in it and again after one
simulated platform re-encode (H.264 CRF 32 at the clip's size). The read passes only when both
reads detect the mark of the clip's own mark id, with the payload's CRC intact, the payload's
soft-decision headroom and the sync's p-value margin to spare (`MARGIN_DECADES`; the reader's
`provenance.watermark.readback.HEADROOM_DB`, and why both). A clip that fails is re-marked
once at the next strength step (`WatermarkSpec.make_stronger`); one that fails again fails the
generation (`WatermarkUnreadable`), so no file reaches the final path and no published row exists.

The platform copy costs no decoding and no memory: while the clip is encoded for release, the
same marked frames go, at the clip's own size and frame rate, into a second encoder at the
platform's settings (`encode_marked`), writing a temporary file that `MarkReader.read` then
detects as `credence verify` would. It holds the detector's first look window only
(`MarkReader.platform_seconds`), which is what a verifier reads first. It starts from the marked
frames rather than from the released CRF 18 file decoded again: one visually lossless generation
fewer than a real platform sees, which is why the margin is asked of it.

Re-marking needs the frames again, and a model's frames come from a generator that cannot be
rewound: `FrameSpool` keeps the (labelled, unmarked) frames, in memory up to `SPOOL_MEMORY_BYTES`
and in an anonymous temporary file beyond.

This module is torch-free: the publisher imports it always; the detector side (which loads torch)
lives in `provenance.watermark.readback` and is handed in by whoever builds the `WatermarkSpec`.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import numpy as np

from .errors import InvalidVideo, ProvenanceError
from .video import VideoWriter

#: The sync's p-value margin a read must keep: decades under the detection threshold (p ≤ 1e-8 at 1e-6).
MARGIN_DECADES = 2.0
#: Frames kept in memory for a possible re-mark; beyond this they go to an anonymous temporary file.
SPOOL_MEMORY_BYTES = 512 * 1024 * 1024


class WatermarkUnreadable(ProvenanceError):
    """The mark could not be read back from the clip about to be released (the generation fails)."""


@dataclass(frozen=True)
class ReadBack:
    """The outcome of one read-back: both reads, the worse p-value and margin, and why it failed."""

    ok: bool
    p_value: float  # the worse (larger) of the two reads' p-values
    margin: float  # decades below the detection threshold, the worse of the two reads (-inf: missed); recorded
    reason: str | None = None
    seconds: float = 0.0
    headroom_db: float | None = None  # the payload's soft-decision headroom, the worse read: what decides


class MarkReader(Protocol):
    """Reads the mark back from a signed file and from its simulated platform re-encode."""

    platform_crf: int  # the simulated platform's H.264 CRF
    platform_preset: str
    platform_seconds: float  # how much of the clip (from its start) the platform copy holds

    def read(self, path: Path, platform: Path, mark_id: int) -> ReadBack:
        """Read `path` (the released bytes) and `platform` (the re-encode); `ok` only with a margin."""
        ...


class _Marker(Protocol):
    def embed(self, frame: np.ndarray, index: int) -> np.ndarray: ...


class _Recorder(Protocol):
    def add(self, frame: np.ndarray, index: int) -> None: ...


@contextmanager
def platform_copy(reader: MarkReader | None) -> Iterator[Path | None]:
    """A temporary path for the platform re-encode (None without a reader); removed on exit."""
    if reader is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="credence-readback-") as tmp:
        yield Path(tmp) / "platform.mp4"


def encode_marked(frames: Iterable[np.ndarray], mark_id: int, make_marker: Callable[[int], _Marker] | None,
                  fps: float, path: Path, crf: int, recorders: Sequence[_Recorder], platform: Path | None = None,
                  reader: MarkReader | None = None) -> int:
    """Mark and encode `frames` to `path` (and, with `platform`, to the platform's settings too); frame count."""
    marker = make_marker(mark_id) if make_marker is not None else None
    with ExitStack() as stack:
        writer = stack.enter_context(VideoWriter(path, fps, crf=crf))
        copy, copy_frames = None, 0
        if platform is not None and reader is not None:
            copy = stack.enter_context(VideoWriter(platform, fps, crf=reader.platform_crf,
                                                   preset=reader.platform_preset))
            copy_frames = max(1, round(reader.platform_seconds * fps))
        for index, frame in enumerate(frames):
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise InvalidVideo(f"frame {index} is {frame.dtype} {frame.shape}, expected uint8 HxWx3")
            if marker is not None:
                frame = marker.embed(frame, index)
            writer.write(frame)
            if copy is not None and index < copy_frames:
                copy.write(frame)
            for recorder in recorders:
                recorder.add(frame, index)
        if writer.frames_written == 0:
            raise InvalidVideo("the clip has no frames")
        return writer.frames_written


def margin_of(detected: bool, payload: int | None, mark_id: int, log10_p: float, threshold: float) -> float:
    """Decades by which a read clears `threshold`; -inf when the payload is not exactly `mark_id`."""
    if not detected or payload != mark_id:
        return -math.inf
    return math.log10(threshold) - log10_p


class FrameSpool:
    """Keeps the frames of one clip so that they can be marked a second time.

    Frames pass through (`through`) while being recorded; `replay` yields them again in order.
    Memory holds up to `limit` bytes, the rest goes to an anonymous temporary file (gone on close,
    and with the process if it dies).
    """

    def __init__(self, limit: int = SPOOL_MEMORY_BYTES) -> None:
        self.limit = limit
        self._memory: list[np.ndarray] = []
        self._used = 0
        self._file: IO[bytes] | None = None
        self._on_disk: list[tuple[int, tuple[int, ...]]] = []  # (offset, shape) of each spilled frame

    def through(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Yield `frames` unchanged, keeping a copy of each."""
        for frame in frames:
            self._keep(frame)
            yield frame

    def _keep(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame)
        if self._file is None and self._used + frame.nbytes <= self.limit:
            self._memory.append(frame.copy())
            self._used += frame.nbytes
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="credence-spool-")
        self._file.seek(0, 2)
        self._on_disk.append((self._file.tell(), frame.shape))
        self._file.write(frame.tobytes())

    def replay(self) -> Iterator[np.ndarray]:
        """The kept frames, in order."""
        yield from self._memory
        if self._file is not None:
            for offset, shape in self._on_disk:
                self._file.seek(offset)
                data = self._file.read(int(np.prod(shape)))
                yield np.frombuffer(data, dtype=np.uint8).reshape(shape)

    def close(self) -> None:
        """Drop the kept frames."""
        self._memory.clear()
        if self._file is not None:
            self._file.close()
            self._file = None
