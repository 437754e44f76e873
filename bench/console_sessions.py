"""What the console's per-request session check costs, and how fast the sign-in throttle refuses.

    python -m bench.console_sessions [--requests 2000] [--database-url URL] [--redis-url URL]

Every console request now resumes its session from a shared store and reads the key, its client
and their scopes from the ledger again (issue 21). This times exactly that path
(`SessionStore.get` + `auth.caller_for_key`), `--requests` times after a warm-up, for each store
that is reachable: the ledger's `console_sessions` table on SQLite (always) and on PostgreSQL
(`--database-url`, an empty database or schema), and Redis (`--redis-url`, whose database is
emptied) with the key check on SQLite. It also times a session's creation, and the throttle's
check of an address and prefix (memory and Redis). p50 / p95 in milliseconds; writes
bench/results/console_sessions.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "console_sessions.json"


def _times(fn: Any, n: int) -> dict[str, float]:
    fn()  # warm-up: connections, statement caches
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {"p50_ms": round(statistics.median(samples), 3), "p95_ms": round(samples[int(0.95 * (n - 1))], 3),
            "n": n}


def _runtime(home: Path, database_url: str | None) -> Any:
    from credence.runtime import Runtime
    from credence.settings import Settings

    env = {"CREDENCE_HOME": str(home)}
    if database_url:
        env["CREDENCE_DATABASE_URL"] = database_url
    rt = Runtime(Settings.from_env(env))
    rt.init()
    return rt


def _caller(rt: Any) -> Any:
    from credence.auth import authenticate, new_key
    from provenance.ledger.models import Client

    with rt.ledger.session() as s:
        client = Client(name=f"bench-{time.time_ns()}")
        s.add(client)
        s.flush()
        key = new_key(s, client, ["review", "audit"], reviewer="Bench")[1]
    return authenticate(rt.ledger, key)


def store_figures(rt: Any, backend: Any, n: int) -> dict[str, Any]:
    """create, and resume (store read + the ledger's key check), for one backend."""
    from credence.auth import caller_for_key
    from credence.sessions import SessionStore

    store = SessionStore(backend, 480)
    caller = _caller(rt)
    sid, _record = store.create(caller)

    def resume() -> None:
        record = store.get(sid)
        assert record is not None
        assert not isinstance(caller_for_key(rt.ledger, record.key_id), str)

    return {"create": _times(lambda: store.create(caller), min(n, 500)), "resume": _times(resume, n)}


def throttle_figures(broker_url: str | None, n: int) -> dict[str, float]:
    from credence.settings import Settings
    from credence.throttle import SignInThrottle

    env = {"CREDENCE_HOME": tempfile.gettempdir()}
    if broker_url:
        env["CREDENCE_BROKER_URL"] = broker_url
    throttle = SignInThrottle(Settings.from_env(env))
    return _times(lambda: throttle.retry_after("203.0.113.9", "0123456789ab"), n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--database-url", help="an empty PostgreSQL database (or schema) for the ledger store")
    parser.add_argument("--redis-url", help="a Redis database to use (it is emptied)")
    args = parser.parse_args()
    from credence.sessions import LedgerBackend, RedisBackend

    results: dict[str, Any] = {"requests": args.requests}
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = _runtime(Path(tmp) / "sqlite", None)
        results["ledger_sqlite"] = store_figures(sqlite, LedgerBackend(sqlite.ledger), args.requests)
        if args.redis_url:
            import redis

            redis.Redis.from_url(args.redis_url).flushdb()
            results["redis_key_check_sqlite"] = store_figures(sqlite, RedisBackend(args.redis_url), args.requests)
        if args.database_url:
            pg = _runtime(Path(tmp) / "pg", args.database_url)
            results["ledger_postgresql"] = store_figures(pg, LedgerBackend(pg.ledger), args.requests)
            pg.ledger.dispose()
        sqlite.ledger.dispose()
    results["throttle_memory"] = throttle_figures(None, args.requests)
    if args.redis_url:
        results["throttle_redis"] = throttle_figures(args.redis_url, args.requests)
        import redis

        redis.Redis.from_url(args.redis_url).flushdb()
    print(f"{'store':<26} {'create p50/p95 ms':>20} {'resume p50/p95 ms':>20}")
    for name in ("ledger_sqlite", "ledger_postgresql", "redis_key_check_sqlite"):
        if name in results:
            c, r = results[name]["create"], results[name]["resume"]
            print(f"{name:<26} {c['p50_ms']:>9} / {c['p95_ms']:<8} {r['p50_ms']:>9} / {r['p95_ms']:<8}")
    for name in ("throttle_memory", "throttle_redis"):
        if name in results:
            print(f"{name:<26} check p50/p95 ms {results[name]['p50_ms']} / {results[name]['p95_ms']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
