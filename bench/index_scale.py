"""The fingerprint index at platform scale: build a snapshot of N synthetic clips, load it, query it.

    python -m bench.index_scale build --clips 10000000 --out /tmp/idx10m     # build peak, snapshot size
    python -m bench.index_scale load --dir /tmp/idx10m --queries 200           # load time, RSS, p95, recall
    python -m bench.index_scale shards --clips 200000                          # 2 shard processes vs 1 index

Each step runs in its own process so that its peak and resident memory are its own (the build's
peak is not the server's). Clips come from `bench.synthetic_ledger.bulk_batches` (real-like
procedural parents, masked per clip); their row ids are negative, so a snapshot can be the base
of a real ledger's index (the ledger's own rows, positive, are its tail): `bench/detector.py
--index-snapshot DIR` verifies real clips against ten million of these.
Queries (load): a stored clip's hashes become a query of 4 samples a second × 16 variants,
random except two samples a second that match the clip's region 1 (centred 68%) with 5 + 5 bits
flipped, about what an 80% centre crop after a re-encode leaves; recall is the share whose best
match is that clip. Writes bench/results/index_scale_<step>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def rss_mb() -> float:
    """Resident memory of this process now (MB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_parts_mb() -> dict[str, float]:
    """Resident memory split: anonymous (the process's own) and file-backed (mapped snapshot pages,
    page cache the kernel can drop and re-read)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("RssAnon:", "RssFile:")):
            out[line.split(":")[0]] = round(int(line.split()[1]) / 1024)
    return out


def peak_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(clips: int, out: Path, pool_size: int, batch: int) -> dict:
    """Stream `clips` synthetic clips into a snapshot at `out` (the FAISS index is the only big thing held)."""
    import faiss

    from bench.synthetic_ledger import bulk_batches, fingerprint_pool
    from provenance.fingerprint import ALGORITHM, STORED_REGIONS
    from provenance.index.fingerprint_index import CANDIDATES_FILE, NFLIP, hash_bits_for, hash_codes
    from provenance.index.store import SnapshotWriter

    t0 = time.perf_counter()
    pool = fingerprint_pool(pool_size)
    pool_s = time.perf_counter() - t0
    regions = len(STORED_REGIONS)
    mean_entries = float(np.mean([fp.seconds for fp in pool])) * regions
    bits = hash_bits_for(int(clips * mean_entries))
    index = faiss.IndexBinaryHash(64, bits)
    writer = SnapshotWriter(out, regions)
    t1 = time.perf_counter()
    done = 0
    for seconds, ph, dh, inf in bulk_batches(clips, pool, batch=batch):
        rows = -np.arange(done + 1, done + seconds.size + 1, dtype=np.int64)
        first = writer.entries
        writer.write(rows, seconds, ph, dh, inf)
        index.add_with_ids(hash_codes(ph), np.arange(first, first + ph.size, dtype=np.int64))
        done += seconds.size
        print(f"  {done:>11,} clips  {writer.entries:>12,} entries  rss {rss_mb():8.0f} MB  "
              f"{time.perf_counter() - t1:6.0f} s", flush=True)
    index.nflip = NFLIP
    path = writer.commit({"algorithm": ALGORITHM, "last_row": 0, "hash_bits": bits, "shard": None,
                          "synthetic": {"clips": clips, "pool": pool_size}},
                         {CANDIDATES_FILE: lambda p: faiss.write_index_binary(index, str(p))})
    build_s = time.perf_counter() - t1
    sizes = {f.name: f.stat().st_size for f in path.iterdir()}
    return {"clips": clips, "entries": writer.entries, "hash_bits": bits, "pool_clips": pool_size,
            "pool_s": round(pool_s, 1), "build_s": round(build_s, 1), "build_peak_rss_mb": round(peak_mb()),
            "snapshot": str(path), "snapshot_mb": {k: round(v / 2**20, 1) for k, v in sizes.items()},
            "candidate_file_bytes_per_clip": round(sizes[CANDIDATES_FILE] / clips, 1)}


def make_query(index, clip: int, rng: np.random.Generator):
    """A query for stored clip `clip` (see the module docstring)."""
    from provenance.fingerprint import QUERY_VARIANTS, QueryFingerprint

    _, seconds, stored_p, stored_d, _ = index.store.clip(clip)
    samples = 4 * seconds
    qp = rng.integers(0, 2**63, (samples, QUERY_VARIANTS), dtype=np.uint64)
    qd = rng.integers(0, 2**63, (samples, QUERY_VARIANTS), dtype=np.uint64)
    for s in range(seconds):
        for sample in (4 * s + 1, 4 * s + 2):
            for stored, target in ((stored_p, qp), (stored_d, qd)):
                noise = np.uint64(sum(1 << int(b) for b in rng.choice(64, 5, replace=False)))
                target[sample, 4] = stored[s, 1] ^ noise
    return QueryFingerprint(np.arange(samples) / 4, qp, qd, np.ones(samples, dtype=bool))


def load(folder: Path, queries: int, nflip: int | None) -> dict:
    """Open the snapshot in a fresh index and time queries against it."""
    from provenance.index import FingerprintIndex

    before = rss_mb()
    t = time.perf_counter()
    index = FingerprintIndex(snapshot_dir=folder, nflip=nflip)
    index.refresh()  # no ledger: opens the snapshot only
    load_s = time.perf_counter() - t
    after_load = rss_mb()
    load_parts = rss_parts_mb()
    rng = np.random.default_rng(7)
    lat, found, scored_rss = [], 0, []
    for _ in range(queries):
        clip = int(rng.integers(0, index.clips))
        query = make_query(index, clip, rng)
        t = time.perf_counter()
        matches = index.search(query, limit=3)
        lat.append((time.perf_counter() - t) * 1000)
        found += bool(matches) and matches[0].row_id == int(index.store.base.rows[clip])
    scored_rss.append(rss_mb())
    parts = rss_parts_mb()
    return {"snapshot": index.loaded_from, "clips": index.clips, "entries": index.entries,
            "nflip": int(index._hash.nflip), "hash_bits": int(index._hash.b), "load_s": round(load_s, 2),
            "rss_before_mb": round(before), "rss_after_load_mb": round(after_load),
            "rss_anon_after_load_mb": load_parts.get("RssAnon"), "rss_file_after_load_mb": load_parts.get("RssFile"),
            "rss_after_queries_mb": round(scored_rss[-1]), "rss_anon_after_queries_mb": parts.get("RssAnon"),
            "rss_file_after_queries_mb": parts.get("RssFile"), "peak_rss_mb": round(peak_mb()),
            "index_resident_mb_estimate": round(index.nbytes / 2**20),
            "queries": queries, "lookup_p50_ms": round(float(np.percentile(lat, 50)), 2),
            "lookup_p95_ms": round(float(np.percentile(lat, 95)), 2), "recall": round(found / queries, 4)}


def serve(folder: Path) -> None:
    """Serve a snapshot as one shard over HTTP (prints its URL, then serves until killed)."""
    from provenance.index import FingerprintIndex
    from provenance.index.shards import shard_server

    index = FingerprintIndex(snapshot_dir=folder)
    index.refresh()
    server = shard_server(index)
    print(json.dumps({"url": f"http://127.0.0.1:{server.server_address[1]}", "clips": index.clips}), flush=True)
    server.serve_forever()


def shards(clips: int, queries: int, work: Path) -> dict:
    """Two shard processes (clips split by `shard_of`) against one index over all: answers and fan-out latency."""
    import subprocess
    import sys

    from bench.synthetic_ledger import bulk_batches, fingerprint_pool
    from provenance.index import FingerprintIndex, shard_of
    from provenance.index.shards import ShardedIndex

    pool = fingerprint_pool(300)
    seconds, ph, dh, inf = (np.concatenate(p) for p in zip(*bulk_batches(clips, pool), strict=True))
    rows = np.arange(1, clips + 1, dtype=np.int64)
    whole = FingerprintIndex()
    whole.store.append(rows, seconds, ph, dh, inf)
    whole.rebuild()
    part = np.array([shard_of(int(r), 2) for r in rows])
    starts = np.concatenate([[0], np.cumsum(seconds.astype(np.int64) * 6)])
    s_starts = np.concatenate([[0], np.cumsum(seconds.astype(np.int64))])
    procs, urls = [], []
    try:
        for k in (0, 1):
            sel = np.nonzero(part == k)[0]
            e = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in sel])
            s = np.concatenate([np.arange(s_starts[i], s_starts[i + 1]) for i in sel])
            index = FingerprintIndex()
            index.store.append(rows[sel], seconds[sel], ph[e], dh[e], inf[s])
            index.rebuild()
            index.write_snapshot(work / f"shard-{k}")
            proc = subprocess.Popen([sys.executable, "-m", "bench.index_scale", "serve", "--dir",
                                     str(work / f"shard-{k}")], stdout=subprocess.PIPE, text=True)
            procs.append(proc)
            assert proc.stdout is not None
            urls.append(json.loads(proc.stdout.readline())["url"])
        sharded = ShardedIndex(urls)
        rng = np.random.default_rng(11)
        one_ms, fan_ms, same = [], [], 0
        for _ in range(queries):
            clip = int(rng.integers(0, clips))
            query = make_query(whole, clip, rng)
            t = time.perf_counter()
            a = whole.search(query, limit=3)
            one_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            b = sharded.search(query, limit=3)
            fan_ms.append((time.perf_counter() - t) * 1000)
            same += [(m.row_id, m.matched_seconds, round(m.similarity, 6)) for m in a] == \
                [(m.row_id, m.matched_seconds, round(m.similarity, 6)) for m in b]
        sharded.close()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
    return {"clips": clips, "shards": 2, "transport": "HTTP (stdlib server, urllib client, one thread per shard)",
            "queries": queries, "same_answer": same,
            "one_index_p50_ms": round(float(np.percentile(one_ms, 50)), 2),
            "one_index_p95_ms": round(float(np.percentile(one_ms, 95)), 2),
            "scatter_gather_p50_ms": round(float(np.percentile(fan_ms, 50)), 2),
            "scatter_gather_p95_ms": round(float(np.percentile(fan_ms, 95)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    b = sub.add_parser("build")
    b.add_argument("--clips", type=int, default=10_000_000)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--pool", type=int, default=3000)
    b.add_argument("--batch", type=int, default=500_000)
    ld = sub.add_parser("load")
    ld.add_argument("--dir", type=Path, required=True)
    ld.add_argument("--queries", type=int, default=200)
    ld.add_argument("--nflip", type=int, default=None)
    sv = sub.add_parser("serve")
    sv.add_argument("--dir", type=Path, required=True)
    sh = sub.add_parser("shards")
    sh.add_argument("--clips", type=int, default=200_000)
    sh.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.step == "serve":
        serve(args.dir)
        return
    if args.step == "build":
        result = build(args.clips, args.out, args.pool, args.batch)
    elif args.step == "shards":
        import tempfile

        result = shards(args.clips, args.queries, Path(tempfile.mkdtemp(prefix="credence-shards-")))
    else:
        result = load(args.dir, args.queries, args.nflip)
    result["load_average"] = os.getloadavg()
    result["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(json.dumps(result, indent=1))
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"index_scale_{args.step}_{result['clips']}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
