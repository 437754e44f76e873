"""Candidate indexes side by side on the same clips: memory, build peak, look-up p95, recall, false matches.

    python -m bench.index_compare --clips 200000 --queries 200

Each contender runs in its own process (its build peak and resident memory are its own) over
the same synthetic clips (`bench.synthetic_ledger.bulk_batches`, real-like parents):

* `legacy`: today's hand-written multi-index hash table (bench/index_legacy.py, before issue 16);
* `faiss_hash`: FAISS `IndexBinaryHash` (what `provenance.index.fingerprint_index` uses);
* `faiss_multihash`: FAISS `IndexBinaryMultiHash` (4 tables of 16 bits, the pytx PDQ choice);
* `faiss_ivf`: FAISS `IndexBinaryIVF` (binary k-means lists, nprobe lists scanned);
* `faiss_flat`: FAISS `IndexBinaryFlat`, exhaustive: the recall ceiling of the candidate stage;
* `usearch_hnsw`: USearch's HNSW graph over the 64-bit codes with the Hamming metric (`usearch`
  wheel, a second library: the in-process analogue of pgvector's `bit` + HNSW), its k nearest per
  query hash kept when within the radius.

All FAISS contenders run the same two-stage search (FAISS range search for candidates, then the
same exact scoring); only the candidate index differs. pgvector (`bit` + HNSW Hamming) was the
other library the issue names; Debian's `postgresql-15-pgvector` is not installable here (apt:
"Unable to locate package"), so it is not in the table.
Recall: queries made from indexed clips (`bench.index_scale.make_query`: region 1, 5 + 5 bits
off, on two samples a second); false matches: the same queries made from clips never indexed
(another seed), counted when the best match is strong (`detector.fingerprint_source.is_strong`).
Writes bench/results/index_compare.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "index_compare.json"
CONTENDERS = ("legacy", "faiss_hash", "faiss_multihash", "faiss_ivf", "faiss_flat", "usearch_hnsw")
USEARCH_K = 32  # neighbours per query hash: HNSW answers k-NN, not a range


class _UsearchRange:
    """USearch HNSW (Hamming over packed 64-bit codes) behind FAISS's `range_search` contract."""

    def __init__(self, codes: np.ndarray) -> None:
        from usearch.index import Index

        self.index = Index(ndim=64, metric="hamming", dtype="b1", connectivity=16, expansion_add=64,
                           expansion_search=64)
        self.index.add(np.arange(len(codes), dtype=np.uint64), codes, threads=1)
        self.b = 0

    def range_search(self, q: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        found = self.index.search(q, USEARCH_K, threads=1)
        keys = np.asarray(found.keys).reshape(len(q), -1)
        dist = np.asarray(found.distances).reshape(len(q), -1)
        counts = np.asarray(found.counts).reshape(-1)
        valid = (np.arange(keys.shape[1])[None, :] < counts[:, None]) & (dist < radius)
        lims = np.zeros(len(q) + 1, dtype=np.int64)
        np.cumsum(valid.sum(1), out=lims[1:])
        return lims, dist[valid].astype(np.int32), keys[valid].astype(np.int64)


def load_clips(clips: int, pool: int, seed: int):
    """Concatenated (seconds, phash, dhash, informative) of `clips` bulk clips."""
    from bench.synthetic_ledger import bulk_batches, fingerprint_pool

    parts = list(bulk_batches(clips, fingerprint_pool(pool), seed=seed))
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(4))


def run_one(name: str, clips: int, pool: int, queries: int) -> dict:
    """Build contender `name` over the clips, then time its look-ups (in this process)."""
    import faiss

    from bench.index_scale import make_query, peak_mb, rss_mb
    from detector.fingerprint_source import is_strong
    from provenance.fingerprint import STORED_REGIONS
    from provenance.index.fingerprint_index import FingerprintIndex, hash_codes

    regions = len(STORED_REGIONS)
    seconds, ph, dh, inf = load_clips(clips, pool, seed=16)
    rows = np.arange(1, clips + 1, dtype=np.int64)
    base_rss = rss_mb()
    t = time.perf_counter()
    if name == "legacy":
        from bench.index_legacy import FingerprintIndex as Legacy

        index = Legacy()
        starts = np.zeros(clips + 1, dtype=np.int64)
        np.cumsum(seconds.astype(np.int64) * regions, out=starts[1:])
        s_starts = np.zeros(clips + 1, dtype=np.int64)
        np.cumsum(seconds.astype(np.int64), out=s_starts[1:])
        for length in np.unique(seconds):  # its bulk add takes clips of one length at a time
            sel = np.nonzero(seconds == length)[0]
            e = (starts[sel][:, None] + np.arange(length * regions)[None]).reshape(-1)
            s = (s_starts[sel][:, None] + np.arange(length)[None]).reshape(-1)
            index.add_bulk(rows[sel], ph[e].reshape(-1, length, regions), dh[e].reshape(-1, length, regions),
                           inf[s].reshape(-1, length))
        index.rebuild()
    else:
        index = FingerprintIndex()
        index.store.append(rows, seconds, ph, dh, inf)
        codes = hash_codes(ph)
        ids = np.arange(ph.size, dtype=np.int64)
        if name == "faiss_hash":
            index.rebuild()
        else:
            if name == "faiss_multihash":
                cand = faiss.IndexBinaryMultiHash(64, 4, 16)
                cand.nflip = 1
                cand.add(codes)
            elif name == "usearch_hnsw":
                cand = _UsearchRange(codes)
            elif name == "faiss_ivf":
                nlist = 2048
                quantizer = faiss.IndexBinaryFlat(64)
                cand = faiss.IndexBinaryIVF(quantizer, 64, nlist)
                cand.own_fields = True
                quantizer.this.disown()
                sample = codes[np.random.default_rng(0).choice(len(codes), min(len(codes), 100 * nlist), replace=False)]
                cand.train(sample)
                cand.nprobe = 16
                cand.add_with_ids(codes, ids)
            else:
                cand = faiss.IndexBinaryFlat(64)
                cand.add(codes)
            index._hash = cand
    build_s = time.perf_counter() - t
    del ph, dh, inf
    resident = rss_mb() - base_rss
    rng = np.random.default_rng(5)
    lat, found = [], 0
    for _ in range(queries):
        clip = int(rng.integers(0, clips))
        view = index if name != "legacy" else _LegacyView(index)
        q = make_query(view, clip, rng)
        t = time.perf_counter()
        matches = index.search(q, limit=3)
        lat.append((time.perf_counter() - t) * 1000)
        found += bool(matches) and matches[0].row_id == view.store.clip(clip)[0]
    # False matches: queries of clips never indexed (another seed, other parents).
    n_neg, false = max(50, queries // 2), 0
    neg = FingerprintIndex()
    n_s, n_p, n_d, n_i = load_clips(n_neg, max(50, pool // 10), seed=99)
    neg.store.append(np.arange(n_neg), n_s, n_p, n_d, n_i)
    for clip in range(n_neg):
        matches = index.search(make_query(neg, clip, rng), limit=1)
        false += bool(matches) and is_strong(matches[0])
    return {"contender": name, "clips": clips, "entries": int(seconds.sum()) * regions, "build_s": round(build_s, 2),
            "build_peak_rss_mb": round(peak_mb()), "resident_mb": round(resident),
            "resident_bytes_per_clip": round(resident * 2**20 / clips, 1),
            "lookup_p50_ms": round(float(np.percentile(lat, 50)), 2),
            "lookup_p95_ms": round(float(np.percentile(lat, 95)), 2), "recall": round(found / queries, 4),
            "queries": queries, "never_indexed_queries": n_neg, "false_matches": false}


class _LegacyView:
    """`make_query` reads a clip's stored hashes through `index.store.clip`; the legacy index has arrays."""

    def __init__(self, legacy) -> None:
        self.store = self
        self._legacy = legacy

    def clip(self, clip: int):
        ix = self._legacy
        lo, hi = int(ix._start[clip]), int(ix._start[clip + 1])
        seconds = int(ix._seconds[clip])
        return (int(ix._rows[clip]), seconds, ix._phash[lo:hi].reshape(seconds, ix.regions),
                ix._dhash[lo:hi].reshape(seconds, ix.regions), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=200_000)
    parser.add_argument("--pool", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--only", default=",".join(CONTENDERS))
    parser.add_argument("--out", type=Path, default=RESULTS, help="result JSON (default: index_compare.json)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one contender here
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.clips, args.pool, args.queries)))
        return
    rows = []
    print(f"{'contender':16s} {'build s':>8s} {'peak MB':>8s} {'res MB':>7s} {'B/clip':>7s} {'p50 ms':>7s} "
          f"{'p95 ms':>7s} {'recall':>7s} {'false':>5s}", flush=True)
    for name in args.only.split(","):
        out = subprocess.run([sys.executable, "-m", "bench.index_compare", "--one", name, "--clips", str(args.clips),
                              "--pool", str(args.pool), "--queries", str(args.queries)],
                             capture_output=True, text=True, check=False, env=os.environ)
        if out.returncode != 0:
            print(f"{name}: failed\n{out.stderr[-2000:]}", flush=True)
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{name:16s} {row['build_s']:>8.1f} {row['build_peak_rss_mb']:>8d} {row['resident_mb']:>7d} "
              f"{row['resident_bytes_per_clip']:>7.0f} {row['lookup_p50_ms']:>7.2f} {row['lookup_p95_ms']:>7.2f} "
              f"{row['recall']:>7.3f} {row['false_matches']:>5d}", flush=True)
    out_path: Path = args.out
    if out_path.exists() and set(args.only.split(",")) != set(CONTENDERS):
        # A partial run (--only) replaces its own rows and keeps the others'.
        only = args.only.split(",")
        kept = [r for r in json.loads(out_path.read_text()).get("rows", []) if r["contender"] not in only]
        rows = kept + rows
    result = {"rows": rows, "args": vars(args), "load_average": os.getloadavg(),
              "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "note": "pgvector: Debian's postgresql-15-pgvector is not installable on this machine (apt: Unable to "
                      "locate package), so it is not measured; usearch_hnsw is the HNSW-over-bits contender"}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
