"""The fingerprint match index: FAISS finds candidate clips, exact scoring names the match.

The ledger is the one source of truth (HMA's rule); this index is derived from it and can be
thrown away and rebuilt (`credence index rebuild`). It has three ways to get current:

* a **snapshot** on disk (`provenance.index.store`): the stored hashes as memory-mapped flat
  files plus the FAISS candidate index, written atomically; loading one is reading the FAISS
  file (10M clips in seconds), never a pass over the ledger;
* a **tail** of the ledger: `refresh()` loads only the fingerprint rows with an id above the last
  one the index holds, so a clip published a moment ago by another process is matched by the
  next query of every API process, without a rebuild;
* a **full reload** when the ledger is not the one the index was built from (ids below the last
  one seen: a restore, a fail-over) or after a refresh failed (the index is then stale).

Search runs in two stages:

1. Candidates: every query pHash (samples × sub-crop variants) is looked up in a FAISS
   `IndexBinaryHash` over the stored pHashes (the entries within MAX_PHASH bits whose hash key,
   21 middle bits of the DCT band, is within one bit of the query's); the dHash of each hit
   is then checked too, and the clips with the most near entries are kept.
2. Scoring: for those few clips every stored hash is compared with every query hash; matches of
   one hypothesis (stored region, query sub-crop, time offset) are counted per stored second.
   An attack is the same edit for the whole clip, so true matches agree on one hypothesis, while
   chance look-alikes scatter over many (`scoring`).

Why FAISS's hash index and not its multi-hash, IVF or pgvector: `bench/index_compare.py` and
docs/architecture.md ("The fingerprint index at scale").
"""

from __future__ import annotations

import threading
import weakref
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select

from ..fingerprint import ALGORITHM, STORED_REGIONS, ClipFingerprint, QueryFingerprint, hamming
from ..ledger import Ledger
from ..ledger.models import Fingerprint
from .scoring import MAX_COMBINED, MAX_PHASH, FingerprintMatch, score_clip
from .store import ClipStore, SnapshotError, SnapshotWriter, current_snapshot, open_snapshot

#: Candidate clips scored exactly per query (scoring one costs ~0.1 ms; at 10M clips a heavily
#: edited true clip can have as few hits as dozens of look-alikes).
MAX_CANDIDATES = 64

#: The FAISS hash key is this many bits of the pHash (at most): 2**21 buckets keep the bucket
#: table small (a bucket costs ~140 bytes) while 227M entries (10M clips) give ~110 a bucket; 21
#: and 20 bits leave the same 6 bytes of code per entry beside its 8-byte id.
MAX_HASH_BITS = 21
#: The key's bits start this far into the pHash (imagehash order, DC coefficient first): the
#: middle of the 8×8 DCT band, balanced bits that survive compression better than the last rows.
KEY_SHIFT = 22
#: Buckets probed: all keys within `nflip` bits of the query's. One flip: 22 probes a query
#: hash. Two flips find every pair with ≤ 2 of its differing bits in the key, but cost 232
#: probes a hash, and a probe (a hash-table look-up) costs as much as scanning ten entries:
#: at 200k clips, 138 ms a look-up against 16 ms, for recall 1.0 against 0.983
#: (bench/index_compare.py, the synthetic crop model).
NFLIP = 1
#: Entries a bucket aimed at while the key can still grow: a bucket costs ~170 bytes, so small
#: indexes take fewer, fuller buckets (at 200k clips, 8 a bucket cost 1,600 B a clip against
#: the legacy index's 845, for 2 ms less a look-up).
BUCKET_ENTRIES = 32

#: The candidate index file inside a snapshot folder.
CANDIDATES_FILE = "candidates.faiss"

#: Ledger rows read per batch when loading or rebuilding.
LOAD_BATCH = 20_000


def hash_codes(phash: np.ndarray) -> np.ndarray:
    """pHashes as FAISS binary codes (n × 8 bytes) whose first bits are the hash key.

    FAISS's hash index keys a code by its first bits (least significant first): rotating the
    pHash right by KEY_SHIFT puts DCT coefficients 22-41 there.
    """
    h = np.ascontiguousarray(phash, dtype=np.uint64).reshape(-1)
    rotated = (h >> np.uint64(KEY_SHIFT)) | (h << np.uint64(64 - KEY_SHIFT))
    return rotated.astype("<u8").view(np.uint8).reshape(-1, 8)


def hash_bits_for(entries: int) -> int:
    """Key bits for an index of `entries`: about BUCKET_ENTRIES a bucket, at most MAX_HASH_BITS."""
    return int(min(MAX_HASH_BITS, max(8, np.ceil(np.log2(max(entries, 1) / BUCKET_ENTRIES)))))


def shard_of(key: str | int, shards: int) -> int:
    """The shard that holds a clip: CRC-32 of its generation id (uniform over random UUIDs)."""
    return zlib.crc32(str(key).encode()) % shards


class FingerprintIndex:
    """Stored fingerprints (snapshot + tail) with a FAISS candidate index, kept fresh from the ledger.

    `snapshot_dir` is where `rebuild`/`write_snapshot` put snapshots and where the first load
    looks for one. `shard` = (k, n) keeps only the clips whose generation falls in shard k of n.
    """

    def __init__(self, ledger: Ledger | None = None, *, snapshot_dir: Path | None = None,
                 shard: tuple[int, int] | None = None, nflip: int | None = None) -> None:
        import faiss  # imported here: `credence --help` and manifest-only verification never load it

        self._faiss = faiss
        self.ledger = ledger
        self.snapshot_dir = snapshot_dir
        self.shard = shard
        self.regions = len(STORED_REGIONS)
        self._nflip = nflip
        self.candidate_dhash = True
        self._lock = threading.RLock()
        self._generation: dict[int, str] = {}
        self.loaded_from: str | None = None
        self._reset()
        self._needs_load = ledger is not None or snapshot_dir is not None

    def _reset(self, hash_bits: int = 8) -> None:
        self.store = ClipStore(self.regions)
        self._stale = False
        self._hash = self._faiss.IndexBinaryHash(64, hash_bits)
        self._hash_bits_entries = 0  # entries the key size was chosen for
        self._set_nflip()

    def _set_nflip(self) -> None:
        self._hash.nflip = self._nflip if self._nflip is not None else NFLIP

    # -- loading -----------------------------------------------------------------------------
    def _first_load(self) -> None:
        """Open the snapshot if there is a usable one (then only the tail is read from the ledger)."""
        self._needs_load = False
        folder = current_snapshot(self.snapshot_dir) if self.snapshot_dir else None
        if folder is None:
            return
        try:
            self.load_snapshot(folder)
        except SnapshotError:
            self._reset()  # unusable: the ledger fills the index instead

    def load_snapshot(self, folder: Path) -> None:
        """Make a snapshot folder the base of the index (the tail is dropped)."""
        segment, meta = open_snapshot(folder, self.regions)
        if meta.get("algorithm") != ALGORITHM or meta.get("shard") != (list(self.shard) if self.shard else None):
            raise SnapshotError(f"{folder.name}: algorithm {meta.get('algorithm')}, shard {meta.get('shard')}")
        hash_file = folder / CANDIDATES_FILE
        if not hash_file.exists():
            raise SnapshotError(f"{folder.name}: no {CANDIDATES_FILE}")
        index = self._faiss.read_index_binary(str(hash_file))
        if index.ntotal != segment.entries:
            raise SnapshotError(f"{folder.name}: the candidate index holds {index.ntotal} entries, "
                                f"not {segment.entries}")
        with self._lock:
            self._reset()
            self.store.base = segment
            self.store.last_row = int(meta.get("last_row", 0))
            self.store.meta = meta
            self._hash = index  # read_index_binary returns the concrete class (a downcast copy would not own it)
            self._hash_bits_entries = max(1, segment.entries)
            self._set_nflip()
            self.loaded_from = folder.name

    def refresh(self) -> int:
        """Load fingerprints recorded since the last refresh (the tail); returns how many clips were added.

        Raises the ledger's error when it cannot be read (the caller says "ledger unavailable");
        the index then stays as it was, marked stale, and the next refresh that works reloads it.
        """
        with self._lock:
            if self._needs_load:
                self._first_load()
            if self.ledger is None:
                return 0
            try:
                with self.ledger.session() as s:
                    newest = s.scalar(select(func.max(Fingerprint.id))) or 0
                # Ids below the last one seen: this is not the database the index was built from.
                # Start again from the snapshot if it is not ahead of this ledger, else from nothing.
                if self._stale or newest < self.store.last_row:
                    self._reset()
                    self.loaded_from = None
                    self._first_load()
                    if self.store.last_row > newest:
                        self._reset()
                        self.loaded_from = None
                added = 0
                while True:
                    batch = self._read_rows(self.store.last_row, LOAD_BATCH)
                    if not batch:
                        break
                    added += self._add_rows(batch)
                    if len(batch) < LOAD_BATCH:
                        break
            except Exception:
                self._stale = True
                raise
            return added

    def _read_rows(self, after: int, limit: int) -> list[Any]:
        assert self.ledger is not None
        with self.ledger.session() as s:
            return list(s.execute(
                select(Fingerprint.id, Fingerprint.generation_id, Fingerprint.regions, Fingerprint.hashes,
                       Fingerprint.informative)
                .where(Fingerprint.id > after, Fingerprint.algorithm == ALGORITHM)
                .order_by(Fingerprint.id).limit(limit)).all())

    def _keeps(self, row_id: int, generation_id: str | None) -> bool:
        if self.shard is None:
            return True
        k, n = self.shard
        return shard_of(generation_id if generation_id is not None else row_id, n) == k

    def _add_rows(self, rows: list[Any]) -> int:
        clips = []
        for row_id, generation_id, regions, hashes, flags in rows:
            self.store.last_row = max(self.store.last_row, int(row_id))
            if regions == self.regions and self._keeps(row_id, generation_id):
                clips.append((int(row_id), ClipFingerprint.from_blobs(hashes, flags, regions)))
        self._append_clips(clips)
        return len(clips)

    def _append_clips(self, clips: list[tuple[int, ClipFingerprint]]) -> None:
        if not clips:
            return
        rows = np.array([r for r, _ in clips], dtype=np.int64)
        seconds = np.array([fp.seconds for _, fp in clips], dtype=np.int32)
        ph = np.concatenate([fp.phash.reshape(-1) for _, fp in clips])
        dh = np.concatenate([fp.dhash.reshape(-1) for _, fp in clips])
        inf = np.concatenate([fp.informative for _, fp in clips])
        self._append_arrays(rows, seconds, ph, dh, inf)

    def _append_arrays(self, rows: np.ndarray, seconds: np.ndarray, ph: np.ndarray, dh: np.ndarray,
                       inf: np.ndarray) -> None:
        _, first_entry = self.store.append(rows, seconds, ph, dh, inf)
        entries = self.store.entries
        if entries > 4 * max(self._hash_bits_entries, 1) and hash_bits_for(entries) > self._hash.b:
            self.rebuild()  # the key was sized for a much smaller index: re-key everything
            return
        self._hash.add_with_ids(hash_codes(ph), np.arange(first_entry, first_entry + ph.size, dtype=np.int64))
        self._set_nflip()

    def add(self, row_id: int, generation_id: str | None, fingerprint: ClipFingerprint) -> None:
        """Add one clip (for tests and benchmarks that have no ledger)."""
        with self._lock:
            if self._needs_load:
                self._first_load()
            if generation_id is not None:
                self._generation[row_id] = generation_id
            if self._keeps(row_id, generation_id):
                self._append_clips([(row_id, fingerprint)])

    def add_bulk(self, row_ids: np.ndarray, phash: np.ndarray, dhash: np.ndarray, informative: np.ndarray) -> None:
        """Add many clips of equal length at once: arrays of clips × seconds × regions (benchmarks)."""
        n, seconds, regions = phash.shape
        assert regions == self.regions
        with self._lock:
            if self._needs_load:
                self._first_load()
            self._append_arrays(row_ids.astype(np.int64), np.full(n, seconds, dtype=np.int32), phash.reshape(-1),
                                dhash.reshape(-1), informative.astype(bool).reshape(-1))

    def rebuild(self) -> None:
        """Re-create the candidate index over every stored entry, with a key sized for them."""
        with self._lock:
            entries = self.store.entries
            index = self._faiss.IndexBinaryHash(64, hash_bits_for(entries))
            start = 0
            for part in self.store.all_phash():
                for lo in range(0, part.size, 10_000_000):
                    chunk = np.asarray(part[lo: lo + 10_000_000])
                    ids = np.arange(start + lo, start + lo + chunk.size, dtype=np.int64)
                    index.add_with_ids(hash_codes(chunk), ids)
                start += part.size
            self._hash = index
            self._hash_bits_entries = max(1, entries)
            self._set_nflip()

    # -- snapshots ---------------------------------------------------------------------------
    def write_snapshot(self, folder: Path | None = None) -> Path:
        """Write what the index holds now as the current snapshot of `folder` (atomically)."""
        folder = folder or self.snapshot_dir
        if folder is None:
            raise ValueError("no snapshot folder: give one, or create the index with snapshot_dir")
        with self._lock:
            writer = SnapshotWriter(folder, self.regions)
            try:
                segments = [self.store.base] + ([self.store.tail] if self.store.clips > self.store.base.clips else [])
                for seg in segments:
                    step = 1_000_000
                    for lo in range(0, seg.clips, step):
                        hi = min(seg.clips, lo + step)
                        e_lo, e_hi = int(seg.starts[lo]), int(seg.starts[hi])
                        s_lo, s_hi = int(seg.second_starts[lo]), int(seg.second_starts[hi])
                        writer.write(np.asarray(seg.rows[lo:hi]), np.asarray(seg.seconds[lo:hi]),
                                     np.asarray(seg.phash[e_lo:e_hi]), np.asarray(seg.dhash[e_lo:e_hi]),
                                     np.asarray(seg.informative[s_lo:s_hi]))
                index = self._hash
                return writer.commit(self._meta(), {CANDIDATES_FILE: lambda p: self._faiss.write_index_binary(
                    index, str(p))})
            except BaseException:
                writer.abort()
                raise

    def _meta(self) -> dict[str, Any]:
        return {"algorithm": ALGORITHM, "last_row": self.store.last_row, "hash_bits": int(self._hash.b),
                "shard": list(self.shard) if self.shard else None}

    # -- figures -----------------------------------------------------------------------------
    @property
    def clips(self) -> int:
        """Clips in the index."""
        return self.store.clips

    @property
    def entries(self) -> int:
        """Stored hashes in the index."""
        return self.store.entries

    @property
    def last_row(self) -> int:
        """The highest ledger fingerprint row the index has seen."""
        return self.store.last_row

    @property
    def candidate_bytes(self) -> int:
        """Approximate memory of the FAISS candidate index: an id and the rest of the code per
        entry, plus the bucket table."""
        b = int(self._hash.b)
        return int(self.entries * (8 + (64 - b + 7) // 8) + min(self.entries, 2 ** b) * 100)

    @property
    def nbytes(self) -> int:
        """Resident memory the index needs: the candidate index and the in-memory tail (the
        snapshot's arrays are mapped from disk and paged in only for the clips a query scores)."""
        return self.candidate_bytes + self.store.nbytes

    def arrays(self) -> dict[str, np.ndarray]:
        """Every stored array, base then tail (to compare two indexes)."""
        segs = [self.store.base] + ([self.store.tail] if self.store.clips > self.store.base.clips else [])
        return {name: np.concatenate([np.asarray(getattr(s, name)) for s in segs])
                for name in ("rows", "seconds", "phash", "dhash", "informative")}

    # -- search ------------------------------------------------------------------------------
    def candidates(self, query: QueryFingerprint, *, limit: int = MAX_CANDIDATES) -> np.ndarray:
        """Clip numbers with the most near entries to the query's hashes (stage 1)."""
        mask = query.informative
        if not mask.any() or self.store.entries == 0:
            return np.zeros(0, dtype=np.int64)
        qp = np.ascontiguousarray(query.phash[mask].reshape(-1))
        qd = np.ascontiguousarray(query.dhash[mask].reshape(-1))
        # FAISS returns binary range hits strictly below the radius.
        lims, dist, entry = self._hash.range_search(hash_codes(qp), MAX_PHASH + 1)
        if entry.size == 0:
            return np.zeros(0, dtype=np.int64)
        entry = entry.astype(np.int64)
        near = dist <= MAX_PHASH
        if self.candidate_dhash:
            # The dHash of every hit is checked too: at 10M clips, ranking candidates on pHash
            # hits alone lets look-alikes crowd the true clip out (recall 0.905 against 0.98 with
            # the check, bench/index_scale.py). For a snapshot these are reads of the mapped
            # dHash file, a page per hit: page cache the kernel keeps hot on a serving box.
            which = np.repeat(np.arange(qp.size), np.diff(lims.astype(np.int64)))
            near &= dist + hamming(self.store.dhash_of(entry), qd[which]) <= MAX_COMBINED
        if not near.any():
            return np.zeros(0, dtype=np.int64)
        owners, inverse, counts = np.unique(self.store.owners(entry[near]), return_inverse=True,
                                            return_counts=True)
        closest = np.full(owners.size, np.iinfo(np.int32).max, dtype=np.int64)
        np.minimum.at(closest, inverse, dist[near].astype(np.int64))
        # Most hits first; among equals the closest hit, not the oldest clip: at 10M clips many
        # look-alikes have one or two chance hits, as many as a heavily edited true clip.
        order = np.lexsort((closest, -counts))
        return owners[order[:limit]].astype(np.int64)

    def search(self, query: QueryFingerprint, *, limit: int = 5) -> list[FingerprintMatch]:
        """The stored clips the query matches, best first (stage 1 then exact scoring)."""
        self.refresh()
        with self._lock:
            clips = self.candidates(query)
            results = [m for m in (self._score(int(c), query) for c in clips) if m is not None]
        results.sort(key=FingerprintMatch.sort_key)
        return self.with_generations(results[:limit])

    def with_generations(self, matches: list[FingerprintMatch]) -> list[FingerprintMatch]:
        """The matches with their generation ids (asked of the ledger in one query when unknown)."""
        missing = [m.row_id for m in matches if m.generation_id is None]
        if not missing or self.ledger is None:
            return matches
        with self.ledger.session() as s:
            found = dict(s.execute(select(Fingerprint.id, Fingerprint.generation_id)
                                   .where(Fingerprint.id.in_(missing))).all())
        return [m if m.generation_id is not None else replace(m, generation_id=found.get(m.row_id))
                for m in matches]

    def _score(self, clip: int, query: QueryFingerprint) -> FingerprintMatch | None:
        row_id, seconds, ph, dh, stored_ok = self.store.clip(clip)
        return score_clip(row_id, self._generation.get(row_id), seconds, ph, dh, stored_ok, query)


def build_snapshot(ledger: Ledger, folder: Path, *, shard: tuple[int, int] | None = None,
                   batch: int = LOAD_BATCH) -> FingerprintIndex:
    """Rebuild from the ledger alone: every fingerprint row, written as a new current snapshot.

    Rows are read in id order, batch by batch; the new snapshot replaces the old one only once
    it is complete (a rebuild that fails leaves the old one current). Returns the index, loaded
    from the snapshot it wrote.
    """
    index = FingerprintIndex(ledger, shard=shard)
    index._needs_load = False
    while True:
        rows = index._read_rows(index.store.last_row, batch)
        if not rows:
            break
        index._add_rows(rows)
        if len(rows) < batch:
            break
    index.rebuild()
    path = index.write_snapshot(folder)
    fresh = FingerprintIndex(ledger, snapshot_dir=folder, shard=shard)
    fresh.load_snapshot(path)
    fresh._needs_load = False
    return fresh


def default_snapshot_dir(ledger: Ledger) -> Path | None:
    """Where a ledger's index snapshot lives by default: `index/` beside a SQLite ledger file.

    A server ledger (PostgreSQL) has no folder of its own: its API processes are given one
    (`index_for(..., snapshot_dir=)`), or start from the ledger.
    """
    from sqlalchemy.engine import make_url

    url = make_url(ledger.url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).resolve().parent / "index"
    return None


_INDEXES: weakref.WeakKeyDictionary[Ledger, FingerprintIndex] = weakref.WeakKeyDictionary()
_INDEXES_LOCK = threading.Lock()


def index_for(ledger: Ledger, *, snapshot_dir: Path | None = None) -> FingerprintIndex:
    """The process-wide index over `ledger` (snapshot + tail on first use, tail on every search)."""
    with _INDEXES_LOCK:
        index = _INDEXES.get(ledger)
        if index is None:
            index = _INDEXES[ledger] = FingerprintIndex(
                ledger, snapshot_dir=snapshot_dir or default_snapshot_dir(ledger))
        return index
