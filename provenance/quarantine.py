"""Held outputs, kept for the reviewer: exactly the frames the model made, never released.

A generation whose output the screen holds for review keeps its frames here (lossless, `.npz`)
with a short preview clip for the review console, under `CREDENCE_HOME/quarantine/<id>/`: a
folder no route serves to clients and no fingerprint index reads. Approval publishes these very
frames; rejection or expiry deletes them. Nothing here is watermarked or signed: it is not a
release.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ProvenanceError
from .ledger.models import utcnow


class QuarantineMissing(ProvenanceError):
    """The held output is not (or no longer) in quarantine: expired or already decided."""


@dataclass(frozen=True)
class HeldOutput:
    """What the quarantine knows about one held output."""

    generation_id: str
    frames: int
    fps: float
    width: int
    height: int
    held_at: dt.datetime
    expires_at: dt.datetime

    @property
    def expired(self) -> bool:
        """True once the configured time to review it has passed."""
        return utcnow() >= self.expires_at


class Quarantine:
    """The folder of held outputs; `ttl` is how long each is kept for review."""

    def __init__(self, folder: Path, ttl: dt.timedelta) -> None:
        self.folder = folder
        self.ttl = ttl

    def _dir(self, generation_id: str) -> Path:
        if not generation_id or "/" in generation_id or "\\" in generation_id or generation_id.startswith("."):
            raise QuarantineMissing(f"no held output {generation_id[:80]!r}")
        return self.folder / generation_id

    def save(self, generation_id: str, frames: np.ndarray, fps: float) -> HeldOutput:
        """Keep `frames` (T x H x W x 3 uint8) for review; written to a temporary name, then renamed."""
        frames = np.ascontiguousarray(frames, dtype=np.uint8)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
            raise ValueError("frames must be a T x H x W x 3 array with at least one frame")
        target = self._dir(generation_id)
        staging = self.folder / f".{generation_id}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        np.savez_compressed(staging / "frames.npz", frames=frames, fps=np.float64(fps))
        held_at = utcnow()
        meta = {"generation_id": generation_id, "frames": int(frames.shape[0]), "fps": float(fps),
                "width": int(frames.shape[2]), "height": int(frames.shape[1]), "held_at": held_at.isoformat(),
                "expires_at": (held_at + self.ttl).isoformat()}
        (staging / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        try:
            from .video import write_video

            write_video(staging / "preview.mp4", frames, fps)
        except Exception:  # the preview is a convenience; the frames are what counts
            (staging / "preview.mp4").unlink(missing_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        return self.info(generation_id)

    def info(self, generation_id: str) -> HeldOutput:
        """What is held for `generation_id` (`QuarantineMissing` when nothing is)."""
        try:
            meta = json.loads((self._dir(generation_id) / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise QuarantineMissing(f"no held output for generation {generation_id}") from None
        return HeldOutput(meta["generation_id"], meta["frames"], meta["fps"], meta["width"], meta["height"],
                          dt.datetime.fromisoformat(meta["held_at"]), dt.datetime.fromisoformat(meta["expires_at"]))

    def load(self, generation_id: str) -> tuple[np.ndarray, float]:
        """The held frames and their rate, exactly as the model made them."""
        path = self._dir(generation_id) / "frames.npz"
        try:
            with np.load(path) as data:
                return data["frames"], float(data["fps"])
        except (OSError, KeyError, ValueError):
            raise QuarantineMissing(f"no held output for generation {generation_id}") from None

    def preview(self, generation_id: str) -> Path | None:
        """The preview clip (unmarked, for reviewers only), if one was written."""
        path = self._dir(generation_id) / "preview.mp4"
        return path if path.is_file() else None

    def thumbnail(self, generation_id: str, index: int) -> bytes:
        """Frame `index` as PNG bytes (for the review console)."""
        frames, _fps = self.load(generation_id)
        if not 0 <= index < frames.shape[0]:
            raise QuarantineMissing(f"generation {generation_id} has no frame {index}")
        return png(frames[index])

    def remove(self, generation_id: str) -> bool:
        """Delete what is held (after a decision); True when something was there."""
        target = self._dir(generation_id)
        existed = target.exists()
        shutil.rmtree(target, ignore_errors=True)
        return existed

    def held(self) -> list[HeldOutput]:
        """Everything held now."""
        if not self.folder.is_dir():
            return []
        out = []
        for entry in sorted(self.folder.iterdir()):
            if entry.is_dir() and not entry.name.startswith("."):
                try:
                    out.append(self.info(entry.name))
                except QuarantineMissing:
                    continue
        return out

    def expired(self) -> list[str]:
        """Ids whose time for review has passed (the caller rejects them, then removes them)."""
        return [h.generation_id for h in self.held() if h.expired]


def png(frame: np.ndarray) -> bytes:
    """A H x W x 3 uint8 frame as a PNG file (no imaging library needed)."""
    frame = np.ascontiguousarray(frame, dtype=np.uint8)
    height, width = frame.shape[:2]
    raw = b"".join(b"\x00" + frame[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
