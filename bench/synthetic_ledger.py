"""A ledger of realistic size for the detector bench: published clips' fingerprints in bulk.

A false-accusation figure measured against a fresh ledger says nothing: with no published clip
there is nothing an innocent upload could be mistaken for. Issue 10 asks for at least 10,000
published clips. Publishing that many real clips takes hours, so the bench adds *synthetic*
ones beside the real clips it publishes: generation rows with status `published` and their
fingerprint rows, inserted with SQLAlchemy Core bulk inserts into the real ledger tables, so
that the detector finds them exactly as it finds real clips (the index loads them from the
ledger; a fingerprint match asks the ledger whether the generation was released).

The hashes are drawn like real ones, not uniformly at random: each synthetic clip is a
procedural grey scene (a smooth random field, an optional lighting gradient and fine texture,
moving discs, a slow pan), hashed second by second by the published side's own code
(`provenance.fingerprint.stored_hashes`), so that the six regions of a second, and the seconds
of a clip, are correlated the way a real clip's are. Uniform random hashes would be too easy to
keep apart: real pHashes share a nearly constant DC bit and cluster by content.
`hash_statistics` puts figures on the resemblance (pair distances, bit balance).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator

import numpy as np
from PIL import Image
from sqlalchemy import func, insert, select

from provenance.fingerprint import ALGORITHM, STORED_REGIONS, ClipFingerprint, hamming, stored_hashes
from provenance.ledger import Ledger
from provenance.ledger.models import Fingerprint, Generation, mark_to_db

#: The floor issue 10 sets for the ledger a false-accusation figure is measured against.
LEDGER_FLOOR = 10_000

#: The model name synthetic rows carry, so that they are told apart from real publishes.
SYNTHETIC_MODEL = "bench-synthetic"

#: Work-size frames (the published side hashes frames of at most 256 px a side; smaller frames
#: hash the same smooth content alike and cost a quarter of the time).
SIZES: tuple[tuple[int, int], ...] = ((128, 72), (128, 96), (128, 128), (96, 128), (72, 128))

#: Rows per bulk insert statement.
BATCH = 2_000


def synthetic_fingerprint(rng: np.random.Generator) -> ClipFingerprint:
    """One clip's published-side fingerprint, 2-6 s long, drawn like a real clip's (see the module)."""
    seconds = int(rng.integers(2, 7))
    w, h = SIZES[int(rng.integers(len(SIZES)))]
    grid = (rng.random((int(rng.integers(2, 9)), int(rng.integers(2, 9)))) * rng.uniform(40, 255)
            + rng.uniform(0, 100)).astype(np.float32)
    field = np.asarray(Image.fromarray(grid, mode="F").resize((2 * w, 2 * h), Image.Resampling.BICUBIC))
    if rng.random() < 0.6:  # lighting: a gradient in a random direction
        ys, xs = np.mgrid[0:2 * h, 0:2 * w].astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        field = field + (np.cos(angle) * xs + np.sin(angle) * ys) * rng.uniform(0, 0.8)
    if rng.random() < 0.5:  # fine texture
        fine = (rng.random((h // 2 + 1, w // 2 + 1)) * rng.uniform(5, 60)).astype(np.float32)
        field = field + np.asarray(Image.fromarray(fine, mode="F").resize((2 * w, 2 * h), Image.Resampling.BILINEAR))
    discs = [(rng.uniform(0, w), rng.uniform(0, h), rng.uniform(4, 0.3 * max(w, h)), rng.uniform(-8, 8),
              rng.uniform(-8, 8), rng.uniform(0, 255)) for _ in range(int(rng.integers(0, 6)))]
    pan_x, pan_y = rng.uniform(-0.15, 0.15) * w, rng.uniform(-0.15, 0.15) * h
    ys, xs = np.mgrid[0:h, 0:w]
    phash, dhash, informative = [], [], []
    for s in range(seconds):
        x0, y0 = int(w / 2 + pan_x * s) % w, int(h / 2 + pan_y * s) % h
        frame = field[y0:y0 + h, x0:x0 + w].copy()
        for cx, cy, r, dx, dy, grey in discs:
            frame[(xs - cx - dx * s) ** 2 + (ys - cy - dy * s) ** 2 < r * r] = grey
        p, d, ok = stored_hashes(np.clip(frame, 0, 255).astype(np.float32))
        phash.append(p)
        dhash.append(d)
        informative.append(ok)
    return ClipFingerprint(np.stack(phash), np.stack(dhash), np.array(informative, dtype=bool))


def published_clips(ledger: Ledger) -> int:
    """Published generations that have a fingerprint the detector can match: the ledger's size here."""
    with ledger.session() as s:
        return int(s.scalar(
            select(func.count(func.distinct(Generation.id)))
            .join(Fingerprint, Fingerprint.generation_id == Generation.id)
            .where(Generation.status == "published", Fingerprint.algorithm == ALGORITHM)) or 0)


def _rows(n: int, rng: np.random.Generator) -> Iterator[tuple[dict[str, object], dict[str, object]]]:
    """(generation row, fingerprint row) pairs with only the columns they need; defaults fill the rest."""
    for _ in range(n):
        generation_id = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        prompt = f"synthetic published clip {generation_id}"
        fp = synthetic_fingerprint(rng)
        yield ({"id": generation_id, "mark_id": mark_to_db(int.from_bytes(rng.bytes(8), "big")),
                "prompt": prompt, "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest(),
                "model": SYNTHETIC_MODEL, "status": "published"},
               {"generation_id": generation_id, "algorithm": ALGORITHM, "seconds": fp.seconds,
                "regions": len(STORED_REGIONS), "hashes": fp.hashes_blob(), "informative": fp.informative_blob()})


def fill_ledger(ledger: Ledger, target: int, *, seed: int = 10, progress: bool = True) -> dict[str, object]:
    """Add synthetic published clips until the ledger holds `target` published, fingerprinted clips.

    Idempotent in effect: a ledger that already holds `target` gets nothing. Rows go in with
    SQLAlchemy Core `insert()` executemany batches, one transaction per batch. Deterministic for
    a seed and a starting count (ids, marks and hashes all come from one seeded generator).
    """
    before = published_clips(ledger)
    missing = max(0, target - before)
    rng = np.random.default_rng([seed, before])
    t0 = time.perf_counter()
    generations, fingerprints = Generation.__table__, Fingerprint.__table__
    batch_g: list[dict[str, object]] = []
    batch_f: list[dict[str, object]] = []

    def flush() -> None:
        with ledger.session() as s:
            s.execute(insert(generations), batch_g)
            s.execute(insert(fingerprints), batch_f)
        batch_g.clear()
        batch_f.clear()

    for i, (g, f) in enumerate(_rows(missing, rng), start=1):
        batch_g.append(g)
        batch_f.append(f)
        if len(batch_g) >= BATCH:
            flush()
            if progress:
                print(f"  ledger: {before + i:,} / {target:,} published clips", flush=True)
    if batch_g:
        flush()
    after = published_clips(ledger)
    return {"before": before, "added": missing, "after": after, "fill_s": round(time.perf_counter() - t0, 1),
            "synthetic_model": SYNTHETIC_MODEL, "seed": seed}


def hash_statistics(phash: np.ndarray, *, pairs: int = 20_000, seed: int = 1) -> dict[str, float]:
    """How a set of 64-bit hashes spreads: distances of random pairs, and how balanced each bit is.

    Uniform random hashes give pairs at 32 ± 4 bits and every bit at 0.5; real pHashes have a
    nearly constant DC bit and a heavier short-distance tail (the look-alikes a detector must
    not confuse).
    """
    flat = np.asarray(phash, dtype=np.uint64).reshape(-1)
    if flat.size < 2:
        return {"hashes": int(flat.size)}
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, flat.size, pairs), rng.integers(0, flat.size, pairs)
    keep = i != j
    d = hamming(flat[i[keep]], flat[j[keep]])
    bits = ((flat[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).mean(axis=0)
    return {"hashes": int(flat.size), "pair_distance_p1": float(np.percentile(d, 1)),
            "pair_distance_p5": float(np.percentile(d, 5)), "pair_distance_p50": float(np.median(d)),
            "bit_frequency_min": round(float(bits.min()), 3), "bit_frequency_max": round(float(bits.max()), 3)}


def ledger_hashes(ledger: Ledger, *, synthetic: bool, limit: int = 5_000) -> np.ndarray:
    """Informative stored pHashes of the ledger's real (or synthetic) published clips, for `hash_statistics`."""
    model_test = Generation.model == SYNTHETIC_MODEL if synthetic else Generation.model != SYNTHETIC_MODEL
    with ledger.session() as s:
        rows = s.execute(select(Fingerprint.hashes, Fingerprint.informative, Fingerprint.regions)
                         .join(Generation, Generation.id == Fingerprint.generation_id)
                         .where(Generation.status == "published", Fingerprint.algorithm == ALGORITHM, model_test)
                         .order_by(Fingerprint.id).limit(limit)).all()
    out = [ClipFingerprint.from_blobs(h, f, r) for h, f, r in rows]
    kept = [fp.phash[fp.informative] for fp in out if fp.informative.any()]
    return np.concatenate(kept) if kept else np.zeros((0, len(STORED_REGIONS)), dtype=np.uint64)


# -- bulk: millions of clips for the index at platform scale ----------------------------------
def fingerprint_pool(n: int, *, seed: int = 16) -> list[ClipFingerprint]:
    """`n` procedural clips hashed by the published side's code (the parents of the bulk clips)."""
    rng = np.random.default_rng([seed, n])
    return [synthetic_fingerprint(rng) for _ in range(n)]


def bulk_batches(n: int, pool: list[ClipFingerprint], *, seed: int = 16, batch: int = 500_000,
                 clip_bits: float = 0.2) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """`n` synthetic clips in batches: (seconds per clip, pHash, dHash, informative), entries flat.

    Hashing ten million procedural scenes would take days, so each bulk clip is one of the pool's
    real-like clips (same length, same informative seconds) with its hashes XORed by a mask of
    its own, drawn once per clip (each bit set with probability `clip_bits`, about 13 of 64), plus
    up to two bits of per-entry noise. The clip-wide mask keeps what makes the hashes
    realistic: the distances between a clip's regions and seconds are unchanged, and bits that
    are nearly constant in real pHashes stay strongly biased. Two clips from one parent sit about
    20 bits apart: look-alikes, the hard case for false matches.
    """
    rng = np.random.default_rng([seed, n, len(pool)])
    regions = len(STORED_REGIONS)
    pool_seconds = np.array([fp.seconds for fp in pool], dtype=np.int64)
    pool_starts = np.zeros(len(pool) + 1, dtype=np.int64)
    np.cumsum(pool_seconds * regions, out=pool_starts[1:])
    pool_sec_starts = np.zeros(len(pool) + 1, dtype=np.int64)
    np.cumsum(pool_seconds, out=pool_sec_starts[1:])
    pool_p = np.concatenate([fp.phash.reshape(-1) for fp in pool])
    pool_d = np.concatenate([fp.dhash.reshape(-1) for fp in pool])
    pool_i = np.concatenate([fp.informative for fp in pool])
    bit_values = np.uint64(1) << np.arange(64, dtype=np.uint64)
    # Bits nearly constant in real pHashes (the DC term) are never flipped: they stay constant.
    frequency = ((pool_p[:, None] & bit_values) > 0).mean(axis=0)
    flippable = np.where((frequency > 0.1) & (frequency < 0.9), bit_values, np.uint64(0))

    def masks(count: int, p: float) -> np.ndarray:
        bits = rng.random((count, 64)) < p
        return np.bitwise_or.reduce(np.where(bits, flippable, np.uint64(0)), axis=1)

    def one_bit(count: int) -> np.ndarray:
        return flippable[rng.integers(0, 64, count)]

    for start in range(0, n, batch):
        m = min(batch, n - start)
        parent = rng.integers(0, len(pool), m)
        seconds = pool_seconds[parent]
        per_clip = seconds * regions
        # Entry k of clip c is entry k of its parent.
        first = np.repeat(pool_starts[parent], per_clip)
        within = np.arange(per_clip.sum()) - np.repeat(np.cumsum(per_clip) - per_clip, per_clip)
        src = first + within
        owner = np.repeat(np.arange(m), per_clip)
        ph = pool_p[src] ^ masks(m, clip_bits)[owner]
        dh = pool_d[src] ^ masks(m, clip_bits)[owner]
        # Per-entry noise: every entry gets up to two more bits flipped.
        for _ in range(2):
            ph ^= one_bit(src.size)
            dh ^= one_bit(src.size)
        s_first = np.repeat(pool_sec_starts[parent], seconds)
        s_within = np.arange(seconds.sum()) - np.repeat(np.cumsum(seconds) - seconds, seconds)
        yield seconds.astype(np.int32), ph, dh, pool_i[s_first + s_within]
