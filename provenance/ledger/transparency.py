"""The audit log as a Merkle tree in the style of RFC 9162 (Certificate Transparency 2.0).

Why: the hash chain (`audit_chain`) shows that rows were not edited *in place*, but someone who
controls the database can cut the tail or rewrite a row and recompute every later hash, and the
chain alone cannot tell. A tree head (size, root) signed and kept outside the database pins the
first `size` rows; a consistency proof shows a later log extends it, and an inclusion proof
shows a platform that one row (a clip's publish record) is in it, with O(log n) hashes.

Leaves: row `i` of the log in id order (ids may have gaps from old rollbacks; the index does not)
is the leaf `i`. Hashes as RFC 9162 §2.1.1: leaf SHA-256(0x00 || bytes), node
SHA-256(0x01 || left || right), MTH of n > 1 leaves splits at the largest power of two < n; the
empty tree hashes to SHA-256("").

Leaf bytes (encoding 1): the ASCII of the compact JSON array
`[1, id, at, action, subject, row_hash]` (`at` as `audit_chain.canonical_time`). Neither the
row's full canonical encoding nor its bare `row_hash`: the full encoding carries the actor, the
client and key ids and `details` (server paths, prompt digests, names), and an inclusion proof
hands the leaf to anyone who asks; a bare `row_hash` would say nothing a platform can check. So
the leaf discloses what a platform needs (which row, when, what happened, to which generation)
and commits to everything else through `row_hash`, the SHA-256 of the full canonical encoding,
which also chains to every earlier row. A row edited and re-hashed changes its leaf and so the
root; the rows' own hashes are checked against their content by `audit_chain.verify`.

Two ways to get subtree hashes: `stream_root` and `LogReader` read the rows in id order
(O(log n) memory, one pass per request), and `TreeCache` keeps the hash of every complete
aligned block of `2**block_bits` leaves (32 bytes per block) so that a proof or a head on a large
log reads at most two partial blocks from the database. bench/transparency.py measures both.
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _encode_ascii  # type: ignore[attr-defined]

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from .models import AuditEntry

#: Version of the leaf encoding, written into every leaf and every signed head.
LEAF_ENCODING = 1
#: Rows fetched per round trip.
BATCH = 5000
EMPTY_ROOT = hashlib.sha256(b"").digest()

Range = tuple[int, int]


# -- RFC 9162 §2.1: hashes ------------------------------------------------------------------
def _stamp(at: dt.datetime) -> str:
    """`audit_chain.canonical_time`, faster (isoformat, not strftime): it runs once per row per pass."""
    if at.tzinfo is not None:
        at = at.astimezone(dt.UTC).replace(tzinfo=None)
    return at.isoformat(timespec="microseconds") + "Z"


def _json_text(value: str | None) -> str:
    return "null" if value is None else _encode_ascii(value)


def leaf_bytes(entry_id: int, at: dt.datetime | str, action: str, subject: str | None, row_hash: str | None) -> bytes:
    """The bytes of one row's leaf (encoding 1): what it discloses, and its row hash.

    Exactly `json.dumps([1, id, at, action, subject, row_hash], separators=(",", ":"),
    ensure_ascii=True)`, written out by hand (json.dumps costs more than the hashing).
    """
    when = at if isinstance(at, str) else _stamp(at)
    return (f"[{LEAF_ENCODING},{int(entry_id)},{_encode_ascii(when)},{_encode_ascii(action)},{_json_text(subject)},"
            f"{_json_text(row_hash)}]").encode("ascii")


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """The largest power of two strictly below `n` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class Frontier:
    """The right edge of a growing tree: one hash per perfect subtree (O(log n) memory).

    After `n` pushes it holds the perfect subtrees that the binary digits of `n` name, largest
    first, and `root()` folds them right to left: exactly MTH of the first `n` leaves.
    """

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[tuple[int, bytes]] = []

    def push(self, digest: bytes) -> None:
        """Append one leaf hash."""
        width, stack = 1, self._stack
        while stack and stack[-1][0] == width:
            digest = node_hash(stack.pop()[1], digest)
            width *= 2
        stack.append((width, digest))
        self.size += 1

    def root(self) -> bytes:
        """MTH of the leaves pushed so far."""
        if not self._stack:
            return EMPTY_ROOT
        digest = self._stack[-1][1]
        for _width, left in reversed(self._stack[:-1]):
            digest = node_hash(left, digest)
        return digest


def mth(hashes: Iterable[bytes]) -> bytes:
    """MTH over leaf hashes given in order."""
    frontier = Frontier()
    for digest in hashes:
        frontier.push(digest)
    return frontier.root()


# -- RFC 9162 §2.1.3.1 and §2.1.4.1: which subtrees a proof is made of ------------------------
def inclusion_ranges(index: int, size: int) -> list[Range]:
    """PATH(index, D[size]) as leaf ranges [start, end), leaf to root."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    out: list[Range] = []
    start, end = 0, size
    while end - start > 1:
        k = split(end - start)
        if index < start + k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start += k
    return out[::-1]


def consistency_ranges(old: int, new: int) -> list[Range]:
    """PROOF(old, D[new]) = SUBPROOF(old, D[new], true) as leaf ranges, in proof order."""
    if not 0 <= old <= new:
        raise ValueError(f"no consistency proof from {old} leaves to {new}")
    if old in (0, new):
        return []
    out: list[Range] = []
    start, end, m, whole = 0, new, old, True
    while m != end - start:
        k = split(end - start)
        if m <= k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        out.append((start, end))
    return out[::-1]


# -- RFC 9162 §2.1.3.2 and §2.1.4.2: verifiers ----------------------------------------------
def verify_inclusion(leaf: bytes, index: int, size: int, path: list[bytes], root: bytes) -> bool:
    """True when `path` proves leaf hash `leaf` is leaf `index` of the tree of `size` with `root`."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, path: list[bytes]) -> bool:
    """True when `path` proves the tree (`new`, `new_root`) extends (`old`, `old_root`).

    Sizes 0 and equal sizes take an empty proof (RFC 9162 defines proofs for 0 < old < new).
    """
    if not 0 <= old <= new:
        return False
    if old == 0:
        return not path and old_root == EMPTY_ROOT
    if old == new:
        return not path and old_root == new_root
    if not path:
        return False
    if old & (old - 1) == 0:
        path = [old_root, *path]
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == old_root and sr == new_root and sn == 0


# -- the log's leaves, read from the ledger --------------------------------------------------
_LEAF_COLUMNS = (AuditEntry.id, AuditEntry.at, AuditEntry.action, AuditEntry.subject, AuditEntry.row_hash)


def log_size(engine: Engine) -> int:
    """Rows in the audit log: the size of the tree now."""
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(AuditEntry)) or 0)


def iter_leaves(engine: Engine, *, after_id: int | None = None, limit: int | None = None,
                from_id: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(id, leaf hash) of rows in id order, keyset-paged; `limit` rows at most."""
    left = limit
    with engine.connect() as connection:
        while left is None or left > 0:
            query = select(*_LEAF_COLUMNS).order_by(AuditEntry.id).limit(BATCH if left is None else min(BATCH, left))
            if after_id is not None:
                query = query.where(AuditEntry.id > after_id)
            elif from_id is not None:
                query = query.where(AuditEntry.id >= from_id)
            batch = connection.execute(query).all()
            if not batch:
                return
            for entry_id, at, action, subject, digest in batch:
                yield entry_id, leaf_hash(leaf_bytes(entry_id, at, action, subject, digest))
            after_id = batch[-1][0]
            if left is not None:
                left -= len(batch)


def stream_root(engine: Engine, size: int | None = None) -> tuple[int, bytes]:
    """(size, MTH) of the first `size` rows (all of them when None): one pass, O(log n) memory."""
    size = log_size(engine) if size is None else size
    frontier = Frontier()
    for _id, digest in iter_leaves(engine, limit=size):
        frontier.push(digest)
    if frontier.size != size:
        raise ValueError(f"the log has {frontier.size} rows, not {size}")
    return size, frontier.root()


def ranges_by_streaming(engine: Engine, ranges: list[Range]) -> dict[Range, bytes]:
    """MTH of each of several disjoint leaf ranges, in one pass over the rows they span."""
    if not ranges:
        return {}
    ordered = sorted(ranges)
    out: dict[Range, bytes] = {}
    position, current = 0, 0
    frontier = Frontier()
    for _id, digest in iter_leaves(engine, limit=ordered[-1][1]):
        while current < len(ordered) and position >= ordered[current][1]:
            current += 1
        if current < len(ordered) and position >= ordered[current][0]:
            frontier.push(digest)
            if position + 1 == ordered[current][1]:
                out[ordered[current]] = frontier.root()
                frontier = Frontier()
        position += 1
    if len(out) != len(ordered):
        raise ValueError(f"the log has {position} rows, fewer than the proof needs ({ordered[-1][1]})")
    return out


def leaf_index(engine: Engine, entry_id: int) -> int:
    """The leaf index of the row with id `entry_id` (rows before it in id order)."""
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(AuditEntry)
                                     .where(AuditEntry.id < entry_id)) or 0)


# -- subtree hashes from the database, with or without a block cache -------------------------
class TreeCache:
    """Hashes of complete, aligned blocks of `2**block_bits` leaves, and each block's first row id.

    Blocks are immutable once complete (the log only grows), so the cache is extended, never
    rebuilt; a proof then combines cached blocks and reads at most the two partial blocks at its
    edges. Memory: 32 bytes and an int per block (about 40 KB per million rows at the default
    1,024 leaves a block), the perfect subtrees above a block memoised as they are computed, and
    the leaf hashes of the `recent_blocks` complete blocks read last (32 KB each): proofs of
    recent rows, the usual request, then touch only the open tail block.
    Thread-safe (the API shares one per process).
    """

    def __init__(self, engine: Engine, block_bits: int = 10, recent_blocks: int = 32) -> None:
        self.engine = engine
        self.block = 1 << block_bits
        self._hashes: list[bytes] = []
        self._first_ids: list[int] = []
        self._seen_id: int | None = None
        self._tail: list[bytes] = []
        self._tail_first = 0
        self._perfect: dict[Range, bytes] = {}
        self._recent: OrderedDict[int, list[bytes]] = OrderedDict()
        self.recent_blocks = recent_blocks
        self._lock = threading.RLock()

    @property
    def covered(self) -> int:
        """Leaves covered by complete cached blocks."""
        return len(self._hashes) * self.block

    @property
    def size(self) -> int:
        """Leaves the cache has read: complete blocks and the open tail block."""
        return self.covered + len(self._tail)

    def extend(self) -> None:
        """Read the rows appended since the last call (only those), sealing each block it completes."""
        with self._lock:
            for entry_id, digest in iter_leaves(self.engine, after_id=self._seen_id):
                if not self._tail:
                    self._tail_first = entry_id
                self._tail.append(digest)
                self._seen_id = entry_id
                if len(self._tail) == self.block:
                    self._hashes.append(mth(self._tail))
                    self._first_ids.append(self._tail_first)
                    self._remember(len(self._hashes) - 1, self._tail)
                    self._tail = []

    def _remember(self, block: int, leaves: list[bytes]) -> None:
        self._recent[block] = leaves
        self._recent.move_to_end(block)
        if len(self._recent) > self.recent_blocks:
            self._recent.popitem(last=False)

    def _block_leaves(self, block: int) -> list[bytes]:
        """The leaf hashes of one block: complete blocks from a small LRU or the ledger, the tail from memory."""
        if block < len(self._hashes):
            hit = self._recent.get(block)
            if hit is not None:
                self._recent.move_to_end(block)
                return hit
            leaves = [digest for _id, digest in iter_leaves(self.engine, from_id=self._first_ids[block],
                                                             limit=self.block)]
            self._remember(block, leaves)
            return leaves
        return list(self._tail) if block == len(self._hashes) else []

    def _leaves(self, start: int, end: int) -> list[bytes]:
        """Leaf hashes [start, end), a block at a time."""
        hashes: list[bytes] = []
        for block in range(start // self.block, (end - 1) // self.block + 1):
            base = block * self.block
            hashes += self._block_leaves(block)[max(start - base, 0):end - base]
        if len(hashes) != end - start:
            raise ValueError(f"the cache ends before leaf {end} (a proof past the log's size, or extend() first)")
        return hashes

    def subtree(self, start: int, end: int) -> bytes:
        """MTH of leaves [start, end)."""
        n = end - start
        if n >= self.block and n & (n - 1) == 0 and start % self.block == 0 and end <= self.covered:
            if n == self.block:
                return self._hashes[start // self.block]
            if (start, end) not in self._perfect:
                half = start + n // 2
                self._perfect[(start, end)] = node_hash(self.subtree(start, half), self.subtree(half, end))
            return self._perfect[(start, end)]
        if n <= self.block or start >= self.covered:
            return mth(self._leaves(start, end))
        k = split(n)
        return node_hash(self.subtree(start, start + k), self.subtree(start + k, end))

    def ranges(self, ranges: list[Range]) -> dict[Range, bytes]:
        """MTH of each range (the `ranges_by_streaming` contract)."""
        with self._lock:
            return {r: self.subtree(*r) for r in ranges}

    def root(self, size: int) -> bytes:
        """MTH of the first `size` leaves."""
        with self._lock:
            return EMPTY_ROOT if size == 0 else self.subtree(0, size)

    def leaf_index(self, entry_id: int) -> int:
        """The leaf index of row `entry_id`, counting only inside its block."""
        block = bisect.bisect_right(self._first_ids, entry_id) - 1
        if block < 0:
            return leaf_index(self.engine, entry_id)
        with self.engine.connect() as connection:
            inside = connection.scalar(select(func.count()).select_from(AuditEntry).where(
                AuditEntry.id >= self._first_ids[block], AuditEntry.id < entry_id)) or 0
        return block * self.block + int(inside)


Source = Callable[[list[Range]], dict[Range, bytes]]


def source_for(engine: Engine, cache: TreeCache | None) -> Source:
    """Where subtree hashes come from: the cache, else one streaming pass per proof."""
    if cache is not None:
        return cache.ranges
    return lambda ranges: ranges_by_streaming(engine, ranges)


def inclusion_proof(engine: Engine, index: int, size: int, cache: TreeCache | None = None) -> list[bytes]:
    """The audit path for leaf `index` in the tree of the first `size` rows."""
    ranges = inclusion_ranges(index, size)
    hashes = source_for(engine, cache)(ranges)
    return [hashes[r] for r in ranges]


def consistency_proof(engine: Engine, old: int, new: int, cache: TreeCache | None = None) -> list[bytes]:
    """The proof that the tree of the first `new` rows extends the tree of the first `old`."""
    ranges = consistency_ranges(old, new)
    hashes = source_for(engine, cache)(ranges)
    return [hashes[r] for r in ranges]


@dataclass(frozen=True)
class PublishLeaf:
    """A generation's publish row as a leaf: its index and the bytes a platform hashes."""

    entry_id: int
    index: int
    data: bytes

    @property
    def hash(self) -> bytes:
        """The leaf hash."""
        return leaf_hash(self.data)


PUBLISHED_ACTION = "generation.published"


def publish_leaf(engine: Engine, generation_id: str, cache: TreeCache | None = None) -> PublishLeaf | None:
    """The first `generation.published` row of `generation_id` as a leaf; None if it has none."""
    with engine.connect() as connection:
        row = connection.execute(select(*_LEAF_COLUMNS).where(AuditEntry.action == PUBLISHED_ACTION,
                                                              AuditEntry.subject == generation_id)
                                 .order_by(AuditEntry.id).limit(1)).first()
    if row is None:
        return None
    index = cache.leaf_index(row[0]) if cache is not None else leaf_index(engine, row[0])
    return PublishLeaf(row[0], index, leaf_bytes(*row))
