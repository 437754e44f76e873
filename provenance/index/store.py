"""The index's clip store: every indexed clip's stored hashes, and its snapshot on disk.

A store is two segments. The *base* is a snapshot: flat files of fixed-width arrays that are
memory-mapped, not read (a 10M-clip snapshot opens in milliseconds and costs resident memory
only for the pages a look-up touches: the scoring of a few candidate clips). The *tail* holds
what was added since, in memory. Clip numbers run across both: base clips first.

A snapshot is a folder written under a temporary name, fsynced, renamed into place and then
named in `CURRENT` (replaced atomically), so that a reader sees the old snapshot or the new one
and never half of one; a crash while writing leaves a temporary folder the next write removes.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..fsio import fsync_dir, fsync_file, fsync_handle, replace_text

#: The snapshot layout; a snapshot of another format is ignored (rebuilt from the ledger).
FORMAT = 1

#: Per-entry arrays (one entry = one stored hash: a second × region of a clip).
ENTRY_ARRAYS = {"phash": np.uint64, "dhash": np.uint64}
#: Per-clip arrays: the ledger's fingerprint row, the clip's seconds, its first entry.
CLIP_ARRAYS = {"rows": np.int64, "seconds": np.int32}
#: Per stored second: whether the sample is informative (flat and dark ones never match).
SECOND_ARRAYS = {"informative": np.bool_}
#: Each clip's first entry and first second (clips + 1 values): mapped too, not recomputed.
OFFSET_ARRAYS = {"starts": np.int64, "second_starts": np.int64}
#: Everything a snapshot holds, as raw little-endian files named `<name>.bin`.
ARRAYS = {**ENTRY_ARRAYS, **CLIP_ARRAYS, **SECOND_ARRAYS, **OFFSET_ARRAYS}


class SnapshotError(Exception):
    """A snapshot that cannot be used (missing files, another format, sizes that disagree)."""


@dataclass
class Segment:
    """A run of clips with contiguous entries: arrays plus each clip's first entry and second."""

    rows: np.ndarray
    seconds: np.ndarray
    phash: np.ndarray
    dhash: np.ndarray
    informative: np.ndarray
    starts: np.ndarray  # entries: clips + 1 offsets
    second_starts: np.ndarray  # seconds: clips + 1 offsets

    @classmethod
    def empty(cls) -> Segment:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.uint64),
                   np.zeros(0, np.uint64), np.zeros(0, bool), np.zeros(1, np.int64), np.zeros(1, np.int64))

    @property
    def clips(self) -> int:
        return int(self.rows.size)

    @property
    def entries(self) -> int:
        return int(self.phash.size)


def offsets(counts: np.ndarray) -> np.ndarray:
    """Start offsets (length n + 1) of runs of the given lengths."""
    out = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


class ClipStore:
    """The base segment (a memory-mapped snapshot, or empty) and an in-memory tail."""

    def __init__(self, regions: int) -> None:
        self.regions = regions
        self.base = Segment.empty()
        self.last_row = 0  # the highest ledger fingerprint row the store holds
        self._tail_chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._tail: Segment | None = Segment.empty()
        self.meta: dict[str, Any] = {}

    # -- adding ------------------------------------------------------------------------------
    def append(self, rows: np.ndarray, seconds: np.ndarray, phash: np.ndarray, dhash: np.ndarray,
               informative: np.ndarray) -> tuple[int, int]:
        """Append clips (entries flat, in clip order); returns (first clip, first entry) numbers."""
        first = (self.clips, self.entries)
        self._tail_chunks.append((rows.astype(np.int64), seconds.astype(np.int32), phash.astype(np.uint64),
                                  dhash.astype(np.uint64), informative.astype(bool)))
        self._tail = None
        return first

    @property
    def tail(self) -> Segment:
        """The in-memory segment (consolidated lazily: many small appends stay cheap)."""
        if self._tail is None:
            parts = list(zip(*self._tail_chunks, strict=True))
            rows, seconds, ph, dh, inf = (np.concatenate(p) for p in parts)
            self._tail_chunks = [(rows, seconds, ph, dh, inf)]
            self._tail = Segment(rows, seconds, ph, dh, inf, offsets(seconds.astype(np.int64) * self.regions),
                                 offsets(seconds.astype(np.int64)))
        return self._tail

    # -- reading -----------------------------------------------------------------------------
    @property
    def clips(self) -> int:
        return self.base.clips + sum(c[0].size for c in self._tail_chunks)

    @property
    def entries(self) -> int:
        return self.base.entries + sum(c[2].size for c in self._tail_chunks)

    def segment_of(self, clip: int) -> tuple[Segment, int]:
        """The segment holding clip number `clip`, and the clip's number inside it."""
        if clip < self.base.clips:
            return self.base, clip
        return self.tail, clip - self.base.clips

    def owners(self, entries: np.ndarray) -> np.ndarray:
        """The clip number of each entry number."""
        base_n = self.base.entries
        out = np.empty(entries.size, dtype=np.int64)
        in_base = entries < base_n
        if in_base.any():
            out[in_base] = np.searchsorted(self.base.starts, entries[in_base], side="right") - 1
        if (~in_base).any():
            tail = self.tail
            out[~in_base] = (np.searchsorted(tail.starts, entries[~in_base] - base_n, side="right") - 1
                             + self.base.clips)
        return out

    def dhash_of(self, entries: np.ndarray) -> np.ndarray:
        """The dHash of each entry number."""
        base_n = self.base.entries
        out = np.empty(entries.size, dtype=np.uint64)
        in_base = entries < base_n
        if in_base.any():
            out[in_base] = self.base.dhash[entries[in_base]]
        if (~in_base).any():
            out[~in_base] = self.tail.dhash[entries[~in_base] - base_n]
        return out

    def clip(self, clip: int) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
        """(ledger row, seconds, pHash seconds × regions, dHash likewise, informative per second)."""
        seg, i = self.segment_of(clip)
        lo, hi = int(seg.starts[i]), int(seg.starts[i + 1])
        s_lo, s_hi = int(seg.second_starts[i]), int(seg.second_starts[i + 1])
        seconds = int(seg.seconds[i])
        return (int(seg.rows[i]), seconds, np.asarray(seg.phash[lo:hi]).reshape(seconds, self.regions),
                np.asarray(seg.dhash[lo:hi]).reshape(seconds, self.regions), np.asarray(seg.informative[s_lo:s_hi]))

    def all_phash(self) -> list[np.ndarray]:
        """The pHash arrays of both segments (to rebuild the candidate index from)."""
        return [self.base.phash, self.tail.phash] if self._tail_chunks else [self.base.phash]

    @property
    def nbytes(self) -> int:
        """Bytes of the tail arrays (the base is mapped from the snapshot, paged in on demand)."""
        if not self._tail_chunks:
            return 0
        t = self.tail
        return sum(a.nbytes for a in (t.rows, t.seconds, t.phash, t.dhash, t.informative, t.starts,
                                      t.second_starts))

    @property
    def mapped_bytes(self) -> int:
        """Bytes of the memory-mapped base segment (on disk; resident only where touched)."""
        b = self.base
        return sum(a.nbytes for a in (b.rows, b.seconds, b.phash, b.dhash, b.informative))


# -- snapshots -------------------------------------------------------------------------------
class SnapshotWriter:
    """Streams clips into a new snapshot folder; `commit()` makes it the current one atomically.

    Arrays are appended to raw files batch by batch, so writing a snapshot never holds more than
    a batch in memory beyond the candidate index itself.
    """

    def __init__(self, folder: Path, regions: int) -> None:
        self.folder = folder
        self.regions = regions
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)  # a writer that died before its commit
        self.path = folder / f".tmp-{uuid.uuid4().hex}"
        self.path.mkdir()
        self._files = {name: open(self.path / f"{name}.bin", "wb") for name in ARRAYS}
        self.clips = 0
        self.entries = 0
        self.seconds = 0
        for name in OFFSET_ARRAYS:
            self._files[name].write(np.zeros(1, dtype="<i8").tobytes())

    def write(self, rows: np.ndarray, seconds: np.ndarray, phash: np.ndarray, dhash: np.ndarray,
              informative: np.ndarray) -> None:
        """Append clips (entries flat, in clip order)."""
        for name, values in (("rows", rows), ("seconds", seconds), ("phash", phash), ("dhash", dhash),
                             ("informative", informative)):
            self._files[name].write(np.ascontiguousarray(values, dtype=np.dtype(ARRAYS[name]).newbyteorder("<"))
                                    .tobytes())
        secs = np.asarray(seconds, dtype=np.int64)
        self._files["starts"].write((self.entries + np.cumsum(secs * self.regions)).astype("<i8").tobytes())
        self._files["second_starts"].write((self.seconds + np.cumsum(secs)).astype("<i8").tobytes())
        self.clips += int(rows.size)
        self.entries += int(phash.size)
        self.seconds += int(informative.size)

    def commit(self, meta: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
        """Close the files, write `meta.json` and any extra files, and make this the current snapshot.

        `extra` maps a file name to a callable that writes it given its path (the candidate index).
        """
        for handle in self._files.values():
            fsync_handle(handle)
            handle.close()
        for name, writer in (extra or {}).items():
            writer(self.path / name)
        meta = {**meta, "format": FORMAT, "regions": self.regions, "clips": self.clips, "entries": self.entries,
                "stored_seconds": self.seconds, "extra": sorted(extra or {})}
        (self.path / "meta.json").write_text(json.dumps(meta, indent=1))
        for name in ("meta.json", *(extra or {})):
            fsync_file(self.path / name)
        final = self.folder / f"snapshot-{int(meta.get('last_row', 0))}-{uuid.uuid4().hex[:8]}"
        os.rename(self.path, final)
        replace_text(self.folder / "CURRENT", final.name + "\n",
                     temp=self.folder / f".CURRENT-{uuid.uuid4().hex}")
        fsync_dir(self.folder)
        # Older snapshots are no longer named; a reader that mapped one keeps its open files.
        for old in self.folder.glob("snapshot-*"):
            if old.name != final.name:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def abort(self) -> None:
        """Drop the unfinished snapshot."""
        for handle in self._files.values():
            handle.close()
        shutil.rmtree(self.path, ignore_errors=True)


def current_snapshot(folder: Path) -> Path | None:
    """The folder `CURRENT` names, or None when there is no snapshot yet."""
    pointer = folder / "CURRENT"
    if not pointer.exists():
        return None
    path = folder / pointer.read_text().strip()
    return path if path.is_dir() else None


def open_snapshot(path: Path, regions: int) -> tuple[Segment, dict[str, Any]]:
    """The memory-mapped base segment of a snapshot folder, and its metadata.

    Raises `SnapshotError` for a snapshot this code cannot use (the caller rebuilds instead).
    """
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"{path.name}: no readable meta.json ({exc})") from None
    if meta.get("format") != FORMAT or meta.get("regions") != regions:
        raise SnapshotError(f"{path.name}: format {meta.get('format')}, regions {meta.get('regions')}")
    sizes = {"rows": meta["clips"], "seconds": meta["clips"], "phash": meta["entries"], "dhash": meta["entries"],
             "informative": meta["stored_seconds"], "starts": meta["clips"] + 1, "second_starts": meta["clips"] + 1}
    arrays: dict[str, np.ndarray] = {}
    for name, dtype in ARRAYS.items():
        file = path / f"{name}.bin"
        dt = np.dtype(dtype).newbyteorder("<")
        expected = sizes[name] * dt.itemsize
        if not file.exists() or file.stat().st_size != expected:
            raise SnapshotError(f"{path.name}: {file.name} is not {expected} bytes")
        arrays[name] = (np.memmap(file, dtype=dt, mode="r", shape=(sizes[name],)) if sizes[name]
                        else np.zeros(0, dtype=dt))
        mapped = getattr(arrays[name], "_mmap", None)
        if mapped is not None and hasattr(mmap, "MADV_RANDOM"):
            # Look-ups read a few entries here and there: no read-ahead (it would page in
            # 128 KB around every hit, and fill memory with hashes no query asked for).
            mapped.madvise(mmap.MADV_RANDOM)
    segment = Segment(arrays["rows"], arrays["seconds"], arrays["phash"], arrays["dhash"], arrays["informative"],
                      arrays["starts"], arrays["second_starts"])
    if int(segment.starts[-1]) != meta["entries"] or int(segment.second_starts[-1]) != meta["stored_seconds"]:
        raise SnapshotError(f"{path.name}: clip lengths disagree with the entry count")
    return segment, meta
