"""The generation API end to end: jobs per minute with 1 and 2 workers, queue wait, and GET p95 under load.

    python -m bench.api [--jobs 12] [--get-seconds 20] [--clients 16]

Runs, on this machine with the shipped default model, a real `credence serve` (uvicorn, in a
subprocess), real `credence worker` processes on the local Redis (db 12, flushed first) and a
SQLite ledger in a temporary CREDENCE_HOME:
1. for 1 worker and then 2 workers: submit `--jobs` generations at once through
   `POST /v1/generations`, poll each with `GET /v1/generations/{id}` until it ends; jobs per
   minute = jobs / (last finish - first submit); queue wait = started_at - created_at per job;
2. `--clients` concurrent clients polling `GET /v1/generations/{id}` for `--get-seconds`: p50/p95.
Errors (any non-2xx other than 429/503 with Retry-After) are counted and must be 0.
Prints a table and writes bench/results/api.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from tests.support import start_worker, stop_process

RESULTS = Path(__file__).resolve().parent / "results"
REDIS_URL = os.environ.get("CREDENCE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
PROMPTS = ["a red circle moving left on a blue background", "a green square moving up on a black background",
           "a yellow triangle moving right on a gray background", "a blue circle moving down on a white background"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))] if ordered else float("nan")


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "CREDENCE_HOME": str(home), "CREDENCE_BROKER_URL": REDIS_URL,
           "CREDENCE_API_KEYS": "bench-operator-key", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("CREDENCE_DATABASE_URL", None)
    return env


def _parse(moment: str) -> dt.datetime:
    return dt.datetime.fromisoformat(moment)


def run_jobs(client: httpx.Client, n: int) -> dict[str, float]:
    """Submit `n` jobs at once; wait for all; jobs/minute and queue waits."""
    start = time.monotonic()
    ids = []
    for i in range(n):
        answer = client.post("/v1/generations", json={"prompt": PROMPTS[i % len(PROMPTS)], "seed": i})
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    records: dict[str, dict] = {}
    while len(records) < n:
        for generation_id in ids:
            if generation_id in records:
                continue
            record = client.get(f"/v1/generations/{generation_id}").json()
            if record["status"] not in ("queued", "running"):
                records[generation_id] = record
        time.sleep(0.2)
    elapsed = time.monotonic() - start
    waits = [(_parse(r["started_at"]) - _parse(r["created_at"])).total_seconds() for r in records.values()
             if r.get("started_at")]
    statuses = [r["status"] for r in records.values()]
    return {"jobs": n, "published": statuses.count("published"), "other": n - statuses.count("published"),
            "jobs_per_minute": 60 * n / elapsed, "wall_s": elapsed, "queue_wait_p50_s": _pct(waits, 0.5),
            "queue_wait_p95_s": _pct(waits, 0.95)}


def get_load(base: str, headers: dict[str, str], generation_id: str, clients: int, seconds: float) -> dict:
    """`clients` threads polling one generation record for `seconds`."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client_loop() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            while time.monotonic() < stop_at:
                t0 = time.perf_counter()
                answer = client.get(f"/v1/generations/{generation_id}")
                took = time.perf_counter() - t0
                with lock:
                    if answer.status_code == 200:
                        latencies.append(took)
                    elif answer.status_code in (429, 503) and "retry-after" in answer.headers:
                        time.sleep(float(answer.headers["retry-after"]))
                    else:
                        errors[str(answer.status_code)] = errors.get(str(answer.status_code), 0) + 1

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"clients": clients, "requests": len(latencies), "rps": len(latencies) / seconds,
            "p50_ms": 1000 * _pct(latencies, 0.5), "p95_ms": 1000 * _pct(latencies, 0.95), "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--get-seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    with tempfile.TemporaryDirectory(prefix="credence-bench-api-") as tmp:
        home = Path(tmp) / "home"
        env = _env(home)
        subprocess.run([sys.executable, "-m", "credence", "init"], env=env, check=True, capture_output=True)
        created = subprocess.run([sys.executable, "-m", "credence", "clients", "create", "bench",
                                  "--scopes", "generate,verify", "--rate", "100000/minute", "--json"],
                                 env=env, check=True, capture_output=True, text=True)
        key = json.loads(created.stdout)["key"]
        port = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "credence", "serve", "--port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {key}"}
        results: dict[str, object] = {"machine": f"{os.cpu_count()} cores", "jobs": {}}
        workers: list[subprocess.Popen] = []
        try:
            with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        if client.get("/healthz").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise SystemExit("server did not start")
                    time.sleep(0.5)
                for count in (1, 2):
                    while len(workers) < count:
                        workers.append(start_worker(env))
                    print(f"{count} worker(s): {args.jobs} jobs, load {os.getloadavg()[0]:.1f}",
                          file=sys.stderr, flush=True)
                    row = run_jobs(client, args.jobs)
                    row["load_average_after"] = round(os.getloadavg()[0], 2)
                    results["jobs"][f"{count}_worker"] = row  # type: ignore[index]
                    print(f"  {row['jobs_per_minute']:.1f} jobs/min", file=sys.stderr, flush=True)
                some_id = client.get("/v1/generations", params={"limit": 1}).json()["items"][0]["id"]
            results["get_under_load"] = get_load(base, headers, some_id, args.clients, args.get_seconds)
        finally:
            for proc in workers:
                stop_process(proc)
            stop_process(server)
    rows = results["jobs"]  # type: ignore[assignment]
    results["two_vs_one"] = rows["2_worker"]["jobs_per_minute"] / rows["1_worker"]["jobs_per_minute"]  # type: ignore[index]
    print(f"{'workers':<10}{'jobs':>6}{'published':>11}{'jobs/min':>10}{'wait p50 s':>12}{'wait p95 s':>12}")
    for name, row in results["jobs"].items():  # type: ignore[union-attr]
        print(f"{name:<10}{row['jobs']:>6}{row['published']:>11}{row['jobs_per_minute']:>10.1f}"
              f"{row['queue_wait_p50_s']:>12.2f}{row['queue_wait_p95_s']:>12.2f}")
    print(f"2 workers / 1 worker: {results['two_vs_one']:.2f}x (target >= 1.0x on this machine)")
    load = results["get_under_load"]
    print(f"GET /v1/generations/{{id}}, {load['clients']} clients: {load['rps']:.0f} req/s, "  # type: ignore[index]
          f"p50 {load['p50_ms']:.1f} ms, p95 {load['p95_ms']:.1f} ms, errors {load['errors']}")  # type: ignore[index]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "api.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
