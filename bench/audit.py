"""Trust-and-safety figures on a large ledger: audit verify rows/s, export rows/s, console page p95.

    python -m bench.audit [--rows 100000] [--requests 40] [--database-url URL]

Fills a fresh SQLite ledger (or the PostgreSQL at --database-url, which must be empty) with
`--rows` generations, one prompt decision each (85 % allow, 10 % review, 5 % block, with
categories), a held tenth in `review`, and one chained audit row per generation, all inserted in
bulk (Core executemany; the audit rows hashed exactly as `Ledger.audit` would chain them). Then
times, each on the real code:

- `audit_chain.verify` over every audit row (what `credence audit verify` runs);
- `export_lines` in CSV and JSON lines over every generation, with peak traced Python memory;
- `search_generations` with a prompt filter and with a category filter;
- console pages over HTTP against uvicorn (`LiveServer`): overview, queue, search, a generation
  page, `--requests` times each after one warm-up, p50 and p95.

Prints a table and writes bench/results/audit.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from provenance.ledger import Ledger
from tests.support.bulk_ledger import populate


def _timed(fn: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def export_figures(ledger: Ledger, fmt: str) -> dict[str, Any]:
    """Rows/s and peak traced memory of a full export (lines are consumed and dropped, as a socket would)."""
    from credence.audit import export_lines

    started = time.perf_counter()
    lines = sum(1 for _line in export_lines(ledger, None, None, fmt))
    seconds = time.perf_counter() - started
    # A second pass under tracemalloc for the memory figure (tracing slows Python; not timed).
    tracemalloc.start()
    for _line in export_lines(ledger, None, None, fmt):
        pass
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rows = lines - (1 if fmt == "csv" else 0)
    return {"rows": rows, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds),
            "peak_traced_mib": round(peak / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "audit.json")
    args = parser.parse_args()

    import httpx

    from credence import db
    from credence.app import create_app
    from credence.audit import SearchFilters, search_generations
    from credence.auth import new_key
    from credence.runtime import Runtime
    from credence.settings import Settings
    from provenance.ledger.audit_chain import verify
    from provenance.ledger.models import Client
    from tests.support import LiveServer

    home = Path(tempfile.mkdtemp(prefix="credence-bench-audit-"))
    env = {"CREDENCE_HOME": str(home)}
    if args.database_url:
        env["CREDENCE_DATABASE_URL"] = args.database_url
    settings = Settings.from_env(env)
    runtime = Runtime(settings)
    runtime.init()
    db.upgrade(settings.database_url)
    ledger = runtime.ledger
    filled, fill_s = _timed(lambda: populate(ledger, args.rows))
    report, verify_s = _timed(lambda: verify(ledger.engine))
    assert report.ok, report.line()
    results: dict[str, Any] = {"rows": args.rows, "database": ledger.engine.dialect.name, "fill_s": round(fill_s, 1),
                               "held": filled["held"],
                               "verify": {"rows": report.rows, "seconds": round(verify_s, 2),
                                          "rows_per_s": round(report.rows / verify_s)}}
    results["export_csv"] = export_figures(ledger, "csv")
    results["export_jsonl"] = export_figures(ledger, "jsonl")
    for name, filters in (("search_prompt", SearchFilters(prompt="number 4242")),
                          ("search_category", SearchFilters(category="violence", action="block")),
                          ("search_all_first_page", SearchFilters())):
        page, seconds = _timed(lambda f=filters: search_generations(ledger, f, limit=50))
        results[name] = {"ms": round(seconds * 1000, 1), "items": len(page.items)}

    with ledger.session() as s:
        client = Client(name="bench-console")
        s.add(client)
        s.flush()
        key = new_key(s, client, ["review", "audit"])[1]
    some_id = search_generations(ledger, SearchFilters(status="published"), limit=1).items[0]["id"]
    pages = {"overview": "/console", "queue": "/console/queue", "search": "/console/search?prompt=magenta+circle",
             "generation": f"/console/generations/{some_id}"}
    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        signin = http.get("/console")
        token = signin.cookies.get("credence_console_csrf")
        answer = http.post("/console/signin", data={"key": key, "csrf": token}, follow_redirects=False)
        assert answer.status_code == 303, answer.text
        for name, path in pages.items():
            assert http.get(path).status_code == 200, path  # warm-up (and a check that it renders)
            times = []
            for _ in range(args.requests):
                started = time.perf_counter()
                response = http.get(path)
                times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200
            times.sort()
            results[f"console_{name}"] = {"p50_ms": round(statistics.median(times), 1),
                                          "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 1),
                                          "requests": len(times)}
    ledger.dispose()

    print(f"ledger: {args.rows} generations on {results['database']} (filled in {results['fill_s']} s, "
          f"{filled['held']} held)")
    print(f"{'measure':<34}{'figure':>30}")
    v = results["verify"]
    print(f"{'audit verify':<34}{v['rows_per_s']:>20,} rows/s ({v['seconds']} s)")
    for fmt in ("csv", "jsonl"):
        e = results[f"export_{fmt}"]
        print(f"{'export ' + fmt:<34}{e['rows_per_s']:>20,} rows/s (peak {e['peak_traced_mib']} MiB traced)")
    for name in ("search_prompt", "search_category", "search_all_first_page"):
        print(f"{name:<34}{results[name]['ms']:>20} ms ({results[name]['items']} items)")
    for name in pages:
        c = results[f"console_{name}"]
        print(f"{'console ' + name:<34}{'p50 ' + str(c['p50_ms']) + ' ms, p95 ' + str(c['p95_ms']) + ' ms':>30}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
