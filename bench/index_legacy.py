"""Today's index before issue 16 (kept verbatim for bench/index_compare.py): a hand-written multi-index hash table.

The ledger is the one source of truth (HMA's rule); this index is a cache of it that any process
can rebuild. `refresh()` loads only rows with an id above the last one seen, so a clip published
a second ago by another process is matchable on the next query. A refresh that fails (the
database is down) leaves the index as it was and marks it stale; the first refresh that works
again reloads everything, since the database that came back may not be the one that left (a
restore, a fail-over): rows may have gone and ids may have restarted.

Search runs in two stages:

1. Candidates. Each 64-bit pHash is split into `chunks` slices; an entry within Hamming
   distance d of a query hash has (pigeonhole) at least one slice within floor(d / chunks) bits.
   One sorted table per slice with a bucket-offset array turns "all entries whose slice is within
   1 bit of the query's" into a few array look-ups. New entries wait in a small delta that is
   scanned directly, until it is merged.
2. Scoring. For the few candidate clips, every stored hash is compared with every query hash;
   the matches of one hypothesis (stored region, query sub-crop, time offset) are counted per
   stored second. An attack is the same edit for the whole clip, so true matches agree on one
   hypothesis, while chance look-alikes scatter over many.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np
from sqlalchemy import func, select

from provenance.fingerprint import ALGORITHM, STORED_REGIONS, ClipFingerprint, QueryFingerprint, hamming
from provenance.index import FingerprintMatch, score_clip
from provenance.ledger import Ledger

#: A stored and a query hash "match" when their pHash and dHash are both this close.
MAX_PHASH = 12
MAX_COMBINED = 24

#: New entries go to a small delta with its own tables (re-sorted on each load, cheap); the
#: main tables are rebuilt when the delta passes this many entries or a tenth of the main.
DELTA_LIMIT = 20_000

#: Past this many entries, slices are probed exactly (radius 0) rather than within one bit:
#: 22 times fewer candidates; a true clip is still found through its many samples and variants.
EXACT_PROBE_ENTRIES = 30_000_000

#: Candidate clips scored exactly per query.
MAX_CANDIDATES = 32


class _Tables:
    """Sorted slice tables over a fixed set of entries (rebuilt, never edited)."""

    def __init__(self, phash: np.ndarray, chunks: int) -> None:
        self.chunks = chunks
        self.bits = 64 // chunks
        self.order: list[np.ndarray] = []
        self.offsets: list[np.ndarray] = []
        mask = np.uint64((1 << self.bits) - 1)
        for c in range(chunks):
            key = ((phash >> np.uint64(c * self.bits)) & mask).astype(np.uint32)
            order = np.argsort(key, kind="stable").astype(np.uint32)
            counts = np.bincount(key, minlength=1 << self.bits)
            offsets = np.zeros((1 << self.bits) + 1, dtype=np.int64)
            np.cumsum(counts, out=offsets[1:])
            self.order.append(order)
            self.offsets.append(offsets)

    @property
    def nbytes(self) -> int:
        return sum(o.nbytes for o in self.order) + sum(o.nbytes for o in self.offsets)

    def candidates(self, queries: np.ndarray, radius: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(entry, query) pairs whose slice is within `radius` (0 or 1) bits of each other.

        Pairs, not entries: each candidate is then compared with the one query hash that found
        it, so the cost grows with the candidates, not with candidates × queries.
        """
        mask = np.uint64((1 << self.bits) - 1)
        flips = np.array([0] + ([1 << b for b in range(self.bits)] if radius else []), dtype=np.int64)
        entries, owners = [], []
        for c in range(self.chunks):
            key = ((queries >> np.uint64(c * self.bits)) & mask).astype(np.int64)
            probes = (key[:, None] ^ flips[None, :]).reshape(-1)
            probe_query = np.repeat(np.arange(queries.size), flips.size)
            starts, ends = self.offsets[c][probes], self.offsets[c][probes + 1]
            sizes = ends - starts
            total = int(sizes.sum())
            if total == 0:
                continue
            # Concatenate the ranges [start, end) without a Python loop.
            idx = np.repeat(starts - np.cumsum(sizes) + sizes, sizes) + np.arange(total)
            entries.append(self.order[c][idx])
            owners.append(np.repeat(probe_query, sizes))
        if not entries:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(entries).astype(np.int64), np.concatenate(owners)


class FingerprintIndex:
    """All stored fingerprints in memory, with multi-index hashing for candidate look-up."""

    def __init__(self, ledger: Ledger | None = None, *, chunks: int | None = None) -> None:
        self.ledger = ledger
        self.regions = len(STORED_REGIONS)
        self._chunks = chunks
        self._lock = threading.Lock()
        self._clear()

    # -- loading -----------------------------------------------------------------------------
    def refresh(self) -> int:
        """Load fingerprints recorded since the last refresh; returns how many clips were added.

        Raises the ledger's error when it cannot be read (the caller says "ledger unavailable");
        the index then stays as it was, marked stale, and the next refresh that works reloads it.
        """
        if self.ledger is None:
            return 0
        from provenance.ledger.models import Fingerprint

        with self._lock:
            try:
                with self.ledger.session() as s:
                    newest = s.scalar(select(func.max(Fingerprint.id))) or 0
                    # Ids below the last one seen: this is not the database the index was built from.
                    full = self._stale or newest < self._last_row
                    since = 0 if full else self._last_row
                    rows = s.execute(
                        select(Fingerprint.id, Fingerprint.generation_id, Fingerprint.regions, Fingerprint.hashes,
                               Fingerprint.informative)
                        .where(Fingerprint.id > since, Fingerprint.algorithm == ALGORITHM)
                        .order_by(Fingerprint.id)).all()
            except Exception:
                self._stale = True
                raise
            if full:
                self._clear()
            for row_id, generation_id, regions, hashes, flags in rows:
                if regions == self.regions:
                    self._pending.append((row_id, generation_id, ClipFingerprint.from_blobs(hashes, flags, regions)))
                self._last_row = max(self._last_row, row_id)
            added = len(self._pending)
            self._flush_pending()
            return added

    def _clear(self) -> None:
        """Start empty (at construction, and before a full reload from the ledger)."""
        self._last_row = 0
        # Set when a refresh failed: the next one that works reloads from scratch.
        self._stale = False
        # Per entry (one stored hash): pHash and dHash; a clip's entries are contiguous,
        # seconds × regions in order, so the owner of an entry is found in `_start`.
        self._phash = np.zeros(0, dtype=np.uint64)
        self._dhash = np.zeros(0, dtype=np.uint64)
        # Per clip: its ledger row, its first entry, its seconds and which are informative.
        self._rows = np.zeros(0, dtype=np.int64)
        self._start = np.zeros(1, dtype=np.int64)
        self._seconds = np.zeros(0, dtype=np.int32)
        self._informative = np.zeros(0, dtype=bool)  # per stored second, all clips in order
        self._generation: dict[int, str] = {}
        self._tables: _Tables | None = None
        self._indexed = 0  # entries covered by the main tables; the rest is the delta
        self._delta: _Tables | None = None
        self._pending: list[tuple[int, str | None, ClipFingerprint]] = []

    def add(self, row_id: int, generation_id: str | None, fingerprint: ClipFingerprint) -> None:
        """Add one clip (for tests and benchmarks that have no ledger)."""
        with self._lock:
            self._pending.append((row_id, generation_id, fingerprint))
            self._flush_pending()

    def add_bulk(self, row_ids: np.ndarray, phash: np.ndarray, dhash: np.ndarray,
                 informative: np.ndarray) -> None:
        """Add many clips of equal length at once: arrays of clips × seconds × regions (benchmarks).

        The tables are not touched: call `rebuild()` after the last batch.
        """
        n, seconds, regions = phash.shape
        assert regions == self.regions
        with self._lock:
            self._append(row_ids.astype(np.int64), np.full(n, seconds, dtype=np.int32),
                         phash.reshape(-1), dhash.reshape(-1), seconds * regions, maintain=False)
            self._informative = np.concatenate([self._informative, informative.astype(bool).reshape(-1)])

    def _flush_pending(self) -> None:
        if not self._pending:
            return
        rows, secs, ph, dh, flags = [], [], [], [], []
        for row_id, generation_id, fp in self._pending:
            rows.append(row_id)
            secs.append(fp.seconds)
            ph.append(fp.phash.reshape(-1))
            dh.append(fp.dhash.reshape(-1))
            flags.append(fp.informative)
            if generation_id is not None:
                self._generation[row_id] = generation_id
        self._pending = []
        self._informative = np.concatenate([self._informative, *flags])
        sizes = np.array([len(h) for h in ph], dtype=np.int64)
        self._append(np.array(rows, dtype=np.int64), np.array(secs, dtype=np.int32), np.concatenate(ph),
                     np.concatenate(dh), sizes)

    def _append(self, rows: np.ndarray, seconds: np.ndarray, ph: np.ndarray, dh: np.ndarray,
                sizes: np.ndarray | int, *, maintain: bool = True) -> None:
        sizes = np.broadcast_to(np.asarray(sizes, dtype=np.int64), rows.shape)
        self._phash = np.concatenate([self._phash, ph.astype(np.uint64)])
        self._dhash = np.concatenate([self._dhash, dh.astype(np.uint64)])
        self._rows = np.concatenate([self._rows, rows])
        self._seconds = np.concatenate([self._seconds, seconds])
        self._start = np.concatenate([self._start, self._start[-1] + np.cumsum(sizes)])
        pending = self._phash.size - self._indexed
        if not maintain:
            return
        if pending > max(DELTA_LIMIT, self._indexed // 10):
            self.rebuild()
        elif pending:
            self._delta = _Tables(self._phash[self._indexed:], 4)

    def rebuild(self) -> None:
        """Rebuild the sorted slice tables over every entry (the delta becomes empty)."""
        n = self._phash.size
        # Slices of 16 bits while buckets stay small, then 21: the candidates a probe returns
        # grow with entries / 2**bits, and 21-bit slices still find every pair within 5 bits.
        chunks = self._chunks or (4 if n < 500_000 else 3)
        self._tables = _Tables(self._phash, chunks) if n else None
        self._indexed = n
        self._delta = None

    # -- figures -----------------------------------------------------------------------------
    @property
    def clips(self) -> int:
        """Clips in the index."""
        return int(self._rows.size)

    @property
    def entries(self) -> int:
        """Stored hashes in the index."""
        return int(self._phash.size)

    @property
    def nbytes(self) -> int:
        """Memory held by the index arrays."""
        arrays = (self._phash, self._dhash, self._rows, self._start, self._seconds, self._informative)
        return sum(a.nbytes for a in arrays) + (self._tables.nbytes if self._tables else 0) + (
            self._delta.nbytes if self._delta else 0)

    # -- search ------------------------------------------------------------------------------
    def candidates(self, query: QueryFingerprint, *, limit: int = MAX_CANDIDATES) -> np.ndarray:
        """Clip numbers with the most near entries to the query's hashes (stage 1)."""
        mask = query.informative
        if not mask.any() or self._phash.size == 0:
            return np.zeros(0, dtype=np.int64)
        qp = query.phash[mask].reshape(-1)
        qd = query.dhash[mask].reshape(-1)
        hits = []
        for tables, base in ((self._tables, 0), (self._delta, self._indexed)):
            if tables is None:
                continue
            radius = 1 if self._phash.size < EXACT_PROBE_ENTRIES else 0
            entry, which = tables.candidates(qp, radius)
            entry += base
            near = _close(self._phash[entry], self._dhash[entry], qp[which], qd[which])
            hits.append(self._owner(entry[near]))
        if not hits:
            return np.zeros(0, dtype=np.int64)
        owners, counts = np.unique(np.concatenate(hits), return_counts=True)
        return owners[np.argsort(-counts, kind="stable")[:limit]].astype(np.int64)

    def _owner(self, entries: np.ndarray) -> np.ndarray:
        """The clip number of each entry."""
        return np.searchsorted(self._start, entries, side="right") - 1

    def search(self, query: QueryFingerprint, *, limit: int = 5) -> list[FingerprintMatch]:
        """The stored clips the query matches, best first (stage 1 then exact scoring)."""
        self.refresh()
        with self._lock:
            clips = self.candidates(query)
            results = [m for m in (self._score(int(c), query) for c in clips) if m is not None]
        results.sort(key=lambda m: (-m.matched_seconds, -m.similarity, m.mean_distance))
        results = results[:limit]
        if self.ledger is not None and any(m.generation_id is None for m in results):
            results = [self._with_generation(m) for m in results]
        return results

    def _with_generation(self, match: FingerprintMatch) -> FingerprintMatch:
        if match.generation_id is not None or self.ledger is None:
            return match
        from dataclasses import replace

        from provenance.ledger.models import Fingerprint

        with self.ledger.session() as s:
            generation_id = s.scalar(select(Fingerprint.generation_id).where(Fingerprint.id == match.row_id))
        return replace(match, generation_id=generation_id)

    def _score(self, clip: int, query: QueryFingerprint) -> FingerprintMatch | None:
        # Stage 2 is shared with the FAISS index: the comparison is of the candidate stage only.
        lo, hi = int(self._start[clip]), int(self._start[clip + 1])
        seconds = int(self._seconds[clip])
        stored_ok = self._informative[lo // self.regions: hi // self.regions]
        ph = self._phash[lo:hi].reshape(seconds, self.regions)
        dh = self._dhash[lo:hi].reshape(seconds, self.regions)
        row_id = int(self._rows[clip])
        return score_clip(row_id, self._generation.get(row_id), seconds, ph, dh, stored_ok, query)


def _close(p1: np.ndarray, d1: np.ndarray, p2: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """Which pairs of (pHash, dHash) are a match under MAX_PHASH and MAX_COMBINED (broadcasting)."""
    p = hamming(p1, p2)
    return (p <= MAX_PHASH) & (p + hamming(d1, d2) <= MAX_COMBINED)


_INDEXES: weakref.WeakKeyDictionary[Ledger, FingerprintIndex] = weakref.WeakKeyDictionary()
_INDEXES_LOCK = threading.Lock()


def index_for(ledger: Ledger) -> FingerprintIndex:
    """The process-wide index over `ledger` (built on first use, refreshed on every search)."""
    with _INDEXES_LOCK:
        index = _INDEXES.get(ledger)
        if index is None:
            index = _INDEXES[ledger] = FingerprintIndex(ledger)
        return index
