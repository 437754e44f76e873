"""Load: 16 concurrent clients on `POST /v1/verify` (a 5 s clip) and on `POST /v1/moderations`.

    python -m bench.load [--seconds 60] [--clients 16] [--clip-seconds 5]

The server is the real thing: `credence serve` in a subprocess (uvicorn, one process), with a
temporary CREDENCE_HOME made by `credence init`, CREDENCE_API_KEYS set, and the clip published
into its ledger by `credence publish` (so every verification does the full work: C2PA, watermark,
ledger look-ups and the fingerprint search, and answers `generated`).

Each phase runs `--seconds` with `--clients` threads, each with its own keep-alive connection,
sending the next request as soon as the last one is answered. What is counted:
* ok: 200 answers (verify: with the expected verdict; a wrong verdict is an error);
* busy: 503 answers with `Retry-After` (the server's back-pressure when its slots are full); the
  client waits what the header says (capped by the phase's end) before its next request, so a
  busy answer is not retried in a tight loop. They are reported apart from errors;
* errors: anything else, by status (a 503 without `Retry-After` included) or exception name.
Latency p50/p95 are over the ok answers, from request start to the whole body read. req/s is
ok answers over the phase's wall time. One warm-up request of each kind comes first (untimed:
model loading is a start-up cost, not a per-request one).
Peak RSS is the server's VmHWM from /proc/<pid>/status after each phase; the high-water mark is
reset between phases through /proc/<pid>/clear_refs where the kernel allows it (`rss_reset`
says whether it was), otherwise the second figure is the peak of both phases.
Prints a table and writes bench/results/load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support import make_clip

RESULTS = Path(__file__).resolve().parent / "results"
API_KEY = "bench-load-key-0123456789"

#: Prompts the moderation phase cycles through: allowed, held and blocked ones, short and long.
PROMPTS = (
    "a red circle moving left on a blue background",
    "a cat sleeping on a sofa in the afternoon sun",
    "kill the process and restart the server",
    "a crowded market at dusk, slow pan, cinematic lighting, 35 mm film grain",
    "two people fighting with knives in an alley, blood everywhere",
    "a drone shot over snowy mountains at sunrise",
    "how to build a pipe bomb at home",
    "a timelapse of clouds over a city skyline",
)


@dataclass
class Phase:
    """What the clients of one phase saw."""

    latencies: list[float] = field(default_factory=list)
    busy: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _credence(env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run the real CLI; its --json answer."""
    done = subprocess.run([sys.executable, "-m", "credence", *args, "--json"], env=env, capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"credence {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _proc_kb(pid: int, key: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM), or None off Linux."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak(pid: int) -> bool:
    """Reset the process's peak RSS (Linux: writing 5 to clear_refs); whether it worked."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _wait_ready(url: str, server: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"credence serve exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"credence serve did not answer /healthz within {timeout:.0f} s")


def _client(url: str, send: Callable[[httpx.Client], httpx.Response], check: Callable[[httpx.Response], bool],
            phase: Phase, stop_at: float) -> None:
    """One client: requests back to back until `stop_at`; honours Retry-After on a 503."""
    with httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=120) as client:
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            try:
                r = send(client)
            except httpx.HTTPError as exc:
                with phase.lock:
                    phase.errors[type(exc).__name__] += 1
                continue
            elapsed = time.perf_counter() - t0
            retry_after = r.headers.get("retry-after")
            with phase.lock:
                if r.status_code == 200 and check(r):
                    phase.latencies.append(elapsed)
                elif r.status_code == 503 and retry_after is not None:
                    phase.busy += 1
                elif r.status_code == 200:
                    phase.errors["200 with a wrong answer"] += 1
                else:
                    phase.errors[str(r.status_code)] += 1
            if r.status_code == 503 and retry_after is not None:
                try:
                    wait = max(0.0, float(retry_after))
                except ValueError:
                    wait = 1.0
                time.sleep(max(0.0, min(wait, stop_at - time.monotonic())))


def run_phase(url: str, clients: int, seconds: float, send: Callable[[httpx.Client], httpx.Response],
              check: Callable[[httpx.Response], bool]) -> tuple[Phase, float]:
    """`clients` threads for `seconds`; what they saw and the phase's wall time."""
    phase = Phase()
    start = time.monotonic()
    stop_at = start + seconds
    threads = [threading.Thread(target=_client, args=(url, send, check, phase, stop_at), daemon=True)
               for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return phase, time.monotonic() - start


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 1)


def summarise(phase: Phase, wall: float, peak_kb: int | None) -> dict[str, Any]:
    """The figures of one phase."""
    lat = sorted(phase.latencies)
    return {"ok": len(lat), "requests_per_s": round(len(lat) / wall, 2) if wall else 0.0,
            "p50_ms": _ms(statistics.median(lat)) if lat else None,
            "p95_ms": _ms(lat[int(0.95 * (len(lat) - 1))]) if lat else None,
            "max_ms": _ms(lat[-1]) if lat else None, "busy_503": phase.busy,
            "errors": sum(phase.errors.values()), "errors_by_status": dict(phase.errors),
            "wall_s": round(wall, 1), "server_peak_rss_mb": round(peak_kb / 1024, 1) if peak_kb else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each phase")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--clip-seconds", type=float, default=5.0, help="length of the clip the verify phase sends")
    parser.add_argument("--output", type=Path, default=RESULTS / "load.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="credence-load-") as tmp:
        folder = Path(tmp)
        env = {**os.environ, "CREDENCE_HOME": str(folder / "home"), "CREDENCE_API_KEYS": API_KEY}
        env.pop("CREDENCE_DATABASE_URL", None)
        _credence(env, "init")
        source = make_clip(folder / "source.mp4", frames=round(24 * args.clip_seconds), width=256, height=256,
                           fps=24.0, preset="veryfast")
        published = _credence(env, "publish", str(source), "-o", str(folder / "clip.mp4"),
                              "--prompt", "a red circle moving left on a blue background")
        generation_id = published["generation_id"]
        clip = (folder / "clip.mp4").read_bytes()

        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        log = folder / "serve.log"
        with open(log, "wb") as log_handle:
            server = subprocess.Popen([sys.executable, "-m", "credence", "serve", "--host", "127.0.0.1",
                                       "--port", str(port)], env=env, stdout=log_handle, stderr=subprocess.STDOUT)
        try:
            _wait_ready(url, server, log)
            idle_kb = _proc_kb(server.pid, "VmRSS")

            def verify(client: httpx.Client) -> httpx.Response:
                return client.post("/v1/verify", files={"file": ("clip.mp4", clip, "video/mp4")})

            def verified(r: httpx.Response) -> bool:
                body = r.json()
                return bool(body.get("verdict") == "generated" and body.get("generation_id") == generation_id)

            counter = iter(range(1 << 62))

            def moderate(client: httpx.Client) -> httpx.Response:
                return client.post("/v1/moderations", json={"prompt": PROMPTS[next(counter) % len(PROMPTS)]})

            def moderated(r: httpx.Response) -> bool:
                return r.json().get("action") in ("allow", "review", "block")

            rows: dict[str, dict[str, Any]] = {}
            resets: list[bool] = []
            for name, send, check in (("verify", verify, verified), ("moderations", moderate, moderated)):
                t0 = time.perf_counter()
                with httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=300) as warm_client:
                    warm = send(warm_client)
                warm_s = time.perf_counter() - t0
                if warm.status_code != 200 or not check(warm):
                    raise SystemExit(f"warm-up {name}: {warm.status_code} {warm.text[:500]}")
                resets.append(_reset_peak(server.pid))
                phase, wall = run_phase(url, args.clients, args.seconds, send, check)
                rows[name] = {**summarise(phase, wall, _proc_kb(server.pid, "VmHWM")),
                              "warm_up_s": round(warm_s, 2)}
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()

    columns = ["requests_per_s", "p50_ms", "p95_ms", "max_ms", "ok", "busy_503", "errors", "server_peak_rss_mb"]
    print(f"{'route':<22}" + "".join(f"{c:>20}" for c in columns))
    for name, row in rows.items():
        route = {"verify": "POST /v1/verify", "moderations": "POST /v1/moderations"}[name]
        print(f"{route:<22}" + "".join(f"{row[c] if row[c] is not None else '-':>20}" for c in columns))
    for name, row in rows.items():
        if row["errors_by_status"]:
            print(f"{name} errors: {row['errors_by_status']}")
    print(f"{args.clients} clients x {args.seconds:g} s per route against `credence serve` (one uvicorn process); "
          f"verify sends a {args.clip_seconds:g} s 256x256 24 fps H.264 clip ({len(clip) / 1e6:.2f} MB) published "
          f"in the server's ledger; server RSS idle {round(idle_kb / 1024, 1) if idle_kb else '-'} MB; "
          f"{os.cpu_count()} CPUs on this machine (clients and server share them)")
    result = {"clients": args.clients, "seconds": args.seconds, "clip": {"seconds": args.clip_seconds,
              "size": "256x256", "fps": 24, "bytes": len(clip)}, "cpus": os.cpu_count(),
              "server_idle_rss_mb": round(idle_kb / 1024, 1) if idle_kb else None, "rss_reset": resets,
              "routes": rows,
              "counted": {"ok": "200 with the expected answer (verify: generated, the published id)",
                          "busy_503": "503 with Retry-After; the client then waits Retry-After",
                          "errors": "any other status or a transport error",
                          "latency": "request start to body read, ok answers only",
                          "requests_per_s": "ok answers / phase wall time",
                          "server_peak_rss_mb": "VmHWM of the server after the phase (reset before it)"}}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
