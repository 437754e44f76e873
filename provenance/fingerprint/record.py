"""The published side of fingerprinting: one half-second window hashed per second of a clip.

The publisher feeds every released frame to a `FingerprintRecorder`; its `ClipFingerprint` (6
hashes of 16 bytes a second) becomes the clip's `fingerprints` row in the ledger.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidVideo
from .hashing import ALGORITHM, STORED_REGIONS, WINDOW_BINS_PER_SECOND, WindowAverager, stored_hashes, to_work_grey


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
        from ..ledger.models import Fingerprint

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
