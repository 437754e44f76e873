"""Transparency-log costs on a large audit log: checkpoint (tree head + sign), proofs, anchored verify.

    python -m bench.transparency [--rows 1000000] [--samples 200] [--out bench/results/transparency.json]

Fills a fresh SQLite ledger (after `credence init`) with `--rows` audit rows in bulk (Core
executemany), each chained and hashed exactly as `Ledger.audit` would (so `audit verify` accepts
the log: the chain columns are respected); every tenth row is a `generation.published` row of a
random generation id. Then times, each on the real code:

- the tree head by streaming every row (`stream_root`: what `audit checkpoint` runs), with peak
  traced Python memory in a second, untimed pass; ES256 signing and verifying a head (with the
  path to the trust anchor); a whole `audit checkpoint` (head + sign + check + atomic write);
- the block cache (`TreeCache`, 1,024 leaves a block): its one-pass build, then the head from it;
- inclusion and consistency proofs, uncached (one streaming pass each) and cached (random leaves
  and sizes, p50/p95), and their verification;
- `prove_publish` with the cache (publish-row look-up, a freshly signed head, the proof), as
  `GET /v1/transparency/proof/{id}` runs it;
- `verify_anchored` against three checkpoints (the chain walk, the cache build, roots and
  consistency proofs): what `audit verify --anchor` runs.

Prints a table and writes bench/results/transparency.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any


def _timed(fn: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def _cpu(fn: Any) -> tuple[Any, float, float]:
    """Result, wall seconds and CPU seconds of this process (the machine may be shared: CPU is the fairer figure)."""
    cpu = time.process_time()
    result, wall = _timed(fn)
    return result, wall, time.process_time() - cpu


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 3),
            "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)] * 1000, 3), "samples": len(ordered)}


def fill(engine: Any, rows: int, *, batch: int = 20_000, seed: int = 0) -> list[str]:
    """Append `rows` chained audit rows in bulk; returns the published generation ids."""
    import datetime as dt

    from sqlalchemy import insert, select, update

    from provenance.ledger.audit_chain import GENESIS, row_hash
    from provenance.ledger.models import AuditChainHead, AuditEntry

    rng = random.Random(seed)
    with engine.connect() as conn:
        head = conn.execute(select(AuditChainHead.last_id, AuditChainHead.last_hash, AuditChainHead.row_count)).first()
    last_id, prev, count = (head[0], head[1], head[2]) if head else (0, GENESIS, 0)
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    published: list[str] = []
    for offset in range(0, rows, batch):
        chunk = []
        for i in range(offset, min(rows, offset + batch)):
            last_id += 1
            at = start + dt.timedelta(milliseconds=i * 7)
            subject = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            action = "generation.published" if i % 10 == 9 else "generation.created"
            if action == "generation.published":
                published.append(subject)
            details = {"n": i}
            digest = row_hash(last_id, at, "api", action, subject, details, None, None, prev)
            chunk.append({"id": last_id, "at": at, "actor": "api", "action": action, "subject": subject,
                          "details": details, "client_id": None, "key_id": None, "prev_hash": prev,
                          "row_hash": digest})
            prev = digest
        with engine.begin() as conn:
            conn.execute(insert(AuditEntry.__table__), chunk)
    with engine.begin() as conn:
        conn.execute(update(AuditChainHead.__table__).where(AuditChainHead.id == 1)
                     .values(last_id=last_id, last_hash=prev, row_count=count + rows))
    return published


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "transparency.json")
    args = parser.parse_args()

    from credence.runtime import Runtime
    from credence.settings import Settings
    from provenance.ledger import transparency as tl
    from provenance.ledger.checkpoints import (
        fresh_head,
        prove_publish,
        sign_tree_head,
        verify_anchored,
        verify_tree_head,
        write_checkpoint,
    )

    home = Path(tempfile.mkdtemp(prefix="credence-bench-transparency-"))
    runtime = Runtime(Settings.from_env({"CREDENCE_HOME": str(home)}))
    runtime.init()
    engine, identity, anchors = runtime.ledger.engine, runtime.identity, runtime.trust_pem
    published, fill_s = _timed(lambda: fill(engine, args.rows))
    n = tl.log_size(engine)
    rng = random.Random(1)
    results: dict[str, Any] = {"rows": n, "database": engine.dialect.name, "fill_s": round(fill_s, 1)}

    (size, root), head_s, head_cpu = _cpu(lambda: tl.stream_root(engine))
    tracemalloc.start()
    tl.stream_root(engine)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    results["tree_head_streamed"] = {"seconds": round(head_s, 2), "cpu_s": round(head_cpu, 2),
                                     "rows_per_s": round(n / head_s), "cpu_rows_per_s": round(n / head_cpu),
                                     "peak_traced_mib": round(peak / 2**20, 2)}
    sign_times, verify_times = [], []
    for _ in range(50):
        document, seconds = _timed(lambda: sign_tree_head(size, root, identity))
        sign_times.append(seconds)
        verify_times.append(_timed(lambda d=document: verify_tree_head(d, anchors))[1])
    results["sign_es256"] = _ms(sign_times)
    results["verify_signed_head"] = _ms(verify_times)
    folder = home / "checkpoints"

    def checkpoint() -> Path:
        document = fresh_head(engine, identity)
        verify_tree_head(document, anchors)
        return write_checkpoint(folder, document)

    _path, wall, cpu = _cpu(checkpoint)
    results["checkpoint_streamed"] = {"seconds": round(wall, 2), "cpu_s": round(cpu, 2)}

    cache = tl.TreeCache(engine)
    _none, wall, cpu = _cpu(cache.extend)
    results["cache_build"] = {"seconds": round(wall, 2), "cpu_s": round(cpu, 2)}
    results["cache_blocks"] = len(cache._hashes)
    cold = _timed(lambda: cache.root(n))
    assert cold[0] == root, "cached and streamed roots differ"
    results["tree_head_cached"] = {"first_ms": round(cold[1] * 1000, 2)} | _ms(
        [_timed(lambda: cache.root(n))[1] for _ in range(20)])
    results["checkpoint_cached"] = _ms([_timed(lambda: sign_tree_head(n, cache.root(n), identity))[1]
                                        for _ in range(20)])

    indices = [rng.randrange(n) for _ in range(2)]
    uncached = [_cpu(lambda i=i: tl.inclusion_proof(engine, i, n))[1:] for i in indices]
    results["inclusion_streamed"] = {"seconds": [round(w, 2) for w, _c in uncached],
                                     "cpu_s": [round(c, 2) for _w, c in uncached]}
    pairs = [(m, n) for m in (rng.randrange(1, n) for _ in range(2))]
    uncached = [_cpu(lambda m=m, k=k: tl.consistency_proof(engine, m, k))[1:] for m, k in pairs]
    results["consistency_streamed"] = {"seconds": [round(w, 2) for w, _c in uncached],
                                       "cpu_s": [round(c, 2) for _w, c in uncached]}

    inclusion, check_inclusion, consistency, check_consistency = [], [], [], []
    for _ in range(args.samples):
        size_now = rng.randrange(n // 2, n + 1)
        index = rng.randrange(size_now)
        path, seconds = _timed(lambda i=index, k=size_now: tl.inclusion_proof(engine, i, k, cache))
        inclusion.append(seconds)
        leaf = cache.ranges([(index, index + 1)])[(index, index + 1)]
        top = cache.root(size_now)
        ok, seconds = _timed(lambda p=path, i=index, k=size_now, lf=leaf, r=top: tl.verify_inclusion(lf, i, k, p, r))
        assert ok
        check_inclusion.append(seconds)
        old = rng.randrange(1, size_now)
        proof, seconds = _timed(lambda m=old, k=size_now: tl.consistency_proof(engine, m, k, cache))
        consistency.append(seconds)
        old_root = cache.root(old)
        ok, seconds = _timed(lambda m=old, k=size_now, p=proof, a=old_root, b=top:
                             tl.verify_consistency(m, k, a, b, p))
        assert ok
        check_consistency.append(seconds)
    results["inclusion_cached"] = _ms(inclusion) | {"path_length": len(path)}
    results["consistency_cached"] = _ms(consistency) | {"proof_length": len(proof)}
    results["verify_inclusion"] = _ms(check_inclusion)
    results["verify_consistency"] = _ms(check_consistency)
    chosen = rng.sample(published, min(50, len(published)))
    results["prove_publish_cached"] = _ms([_timed(lambda g=g: prove_publish(engine, identity, g, cache=cache))[1]
                                           for g in chosen])
    for _ in range(2):
        checkpoint()
    report, seconds, cpu = _cpu(lambda: verify_anchored(engine, anchors, folder))
    assert report.ok, report.line()
    results["verify_anchored"] = {"seconds": round(seconds, 2), "cpu_s": round(cpu, 2),
                                  "checkpoints": report.checkpoints}
    results["load_average_1m"] = round(__import__("os").getloadavg()[0], 1)
    runtime.ledger.dispose()

    print(f"audit log: {n:,} rows on {results['database']} (filled in {results['fill_s']} s; load average "
          f"{results['load_average_1m']}: wall and CPU seconds both given)")
    print(f"{'measure':<44}{'figure':>36}")
    t = results["tree_head_streamed"]
    rows_out = [
        ("tree head, streamed (1 pass)", f"{t['seconds']} s ({t['cpu_s']} s CPU), peak {t['peak_traced_mib']} MiB"),
        ("ES256 sign / verify head (with path)", f"{results['sign_es256']['p50_ms']} / "
                                                 f"{results['verify_signed_head']['p50_ms']} ms p50"),
        ("audit checkpoint, streamed", f"{results['checkpoint_streamed']['seconds']} s "
                                       f"({results['checkpoint_streamed']['cpu_s']} s CPU)"),
        ("block cache build (1 pass)", f"{results['cache_build']['seconds']} s ({results['cache_build']['cpu_s']} "
                                       f"s CPU), {results['cache_blocks']} blocks"),
        ("tree head + sign, cached", f"{results['checkpoint_cached']['p50_ms']} ms p50, "
                                     f"{results['checkpoint_cached']['p95_ms']} ms p95"),
        ("inclusion proof, streamed", f"{results['inclusion_streamed']['seconds']} s "
                                      f"({results['inclusion_streamed']['cpu_s']} s CPU)"),
        ("consistency proof, streamed", f"{results['consistency_streamed']['seconds']} s "
                                        f"({results['consistency_streamed']['cpu_s']} s CPU)"),
    ]
    for name in ("inclusion_cached", "consistency_cached", "verify_inclusion", "verify_consistency",
                 "prove_publish_cached"):
        rows_out.append((name.replace("_", " "), f"{results[name]['p50_ms']} ms p50, {results[name]['p95_ms']} ms p95"))
    rows_out.append(("audit verify --anchor (3 checkpoints)", f"{results['verify_anchored']['seconds']} s "
                                                              f"({results['verify_anchored']['cpu_s']} s CPU)"))
    for name, figure in rows_out:
        print(f"{name:<44}{figure:>36}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
