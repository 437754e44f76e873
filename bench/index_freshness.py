"""Freshness: how long after one process publishes a clip does another API process match it?

    python -m bench.index_freshness [--repeats 3]

Real processes throughout: `credence init`, `credence publish` of a first clip and `credence
index rebuild` (the snapshot the API starts from), then `credence serve` (the API process,
loading that snapshot), then for each repeat `credence publish` of a new clip in another process
and `POST /v1/verify` of a re-encoded copy of it (manifest stripped) every 0.5 s until the
*fingerprint* evidence names the new generation. The figure is the time from the publishing
process's exit to that answer; the snapshot is checked to be the same one (no rebuild).
Writes bench/results/index_freshness.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.detector import procedural_frames
from provenance.video import write_video
from tests.support.attacks import apply_attack

RESULTS = Path(__file__).resolve().parent / "results" / "index_freshness.json"


def cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "credence", *args], env=env, capture_output=True, text=True,
                         timeout=600, check=False)
    if out.returncode != 0:
        raise SystemExit(f"credence {' '.join(args)} failed: {out.stderr[-1500:]}")
    return out.stdout


def publish(env: dict[str, str], work: Path, seed: int) -> tuple[str, Path]:
    source = work / f"src-{seed}.mp4"
    write_video(source, iter(procedural_frames(seed, "texture", 256, 192, 48)), 12.0, preset="veryfast")
    out = work / f"pub-{seed}.mp4"
    record = json.loads(cli(env, "publish", str(source), "-o", str(out), "--prompt", f"freshness {seed}", "--json"))
    return record["generation_id"], out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--port", type=int, default=8431)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="credence-freshness-"))
    env = {**os.environ, "CREDENCE_HOME": str(work / "home"), "CREDENCE_API_KEYS": "bench-key",
           "HF_HUB_OFFLINE": "1"}
    env.pop("CREDENCE_DATABASE_URL", None)
    cli(env, "init")
    publish(env, work, 1)
    snapshot = json.loads(cli(env, "index", "rebuild", "--json"))["snapshot"]
    server = subprocess.Popen([sys.executable, "-m", "credence", "serve", "--port", str(args.port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rows = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{args.port}", timeout=120,
                          headers={"X-API-Key": "bench-key"}) as client:
            for _ in range(120):
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.5)

            def fingerprint_of(path: Path) -> dict:
                with open(path, "rb") as handle:
                    r = client.post("/v1/verify", files={"file": ("clip.mp4", handle, "video/mp4")})
                r.raise_for_status()
                return next(e for e in r.json()["evidence"] if e["source"] == "fingerprint")

            for k in range(args.repeats):
                generation_id, path = publish(env, work, 100 + k)  # another process: the CLI
                published_at = time.perf_counter()
                copy = apply_attack("reencode_crf35", path, work / f"copy-{k}.mp4")
                polls, found_at = 0, None
                while time.perf_counter() - published_at < 120:
                    polls += 1
                    evidence = fingerprint_of(copy)
                    if evidence.get("generation_id") == generation_id and evidence.get("matched"):
                        found_at = time.perf_counter()
                        break
                    time.sleep(0.5)
                rows.append({"generation_id": generation_id, "polls": polls,
                             "found_after_s": round(found_at - published_at, 2) if found_at else None})
                print(f"  clip {k}: matched by the API process {rows[-1]['found_after_s']} s after the "
                      f"publishing process exited ({polls} look-ups)", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    status = json.loads(cli(env, "index", "status", "--json"))
    found = [r["found_after_s"] for r in rows if r["found_after_s"] is not None]
    result = {"rows": rows, "max_s": max(found) if found else None, "all_found": len(found) == len(rows),
              "target_s": 60, "snapshot_at_start": snapshot, "snapshot_at_end": status["snapshot"],
              "rebuilt": snapshot != status["snapshot"], "rows_since_snapshot": status["rows_since_snapshot"],
              "load_average": os.getloadavg(), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(json.dumps(result, indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
