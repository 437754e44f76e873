"""Compliance report at scale, and what the visible label costs a publish (issue 25).

Two measurements, one table, `bench/results/compliance.json`:

1. The report over N generations (default 100,000): synthetic ledger rows bulk-inserted with
   SQLAlchemy Core into a temporary, migrated SQLite ledger (as `bench.synthetic_ledger` does for
   fingerprints): published generations with their file rows (label modes mixed, a few files
   from before labels), held and blocked generations with moderation decisions naming
   categories, spread over 30 days and 50 clients. The report is run for the whole range and for
   one client and a 7-day period; each run in a fresh process so that its peak RSS is its own,
   and against a baseline process that only opens the ledger. Target: <= 5 s, memory flat in N
   (run with `--generations 20000` to compare).
2. The label at 1080p: a real publish (watermark, H.264, fingerprints, C2PA) of a 1920x1080
   clip with and without a `badge` and a `moving` label; the label's share is the burn-in time
   (measured alone over the same frames) over the labelled publish's time. Target: <= 5 %.

    python -m bench.compliance                       # 100k generations, 1080p x 24 frames
    python -m bench.compliance --generations 20000 --frames 12
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert

RESULTS = Path(__file__).resolve().parent / "results" / "compliance.json"
CATEGORIES = ("sexual", "violence", "hate", "self_harm", "public_figures", "copyright")
MODES = ("badge", "badge", "badge", "moving", "corner", "off")
START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
BATCH = 5_000


def fill(url: str, generations: int, clients: int = 50, seed: int = 25) -> dict[str, Any]:
    """Insert `generations` synthetic generations (80% published, 12% held, 8% blocked) with their rows."""
    from provenance.ledger import Ledger
    from provenance.ledger.models import Client, Generation, ModerationDecision, PublishedFile, mark_to_db

    ledger = Ledger(url)
    rng = np.random.default_rng(seed)
    client_ids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(clients)]
    t0 = time.perf_counter()
    with ledger.session() as s:
        s.execute(insert(Client.__table__), [{"id": cid, "name": f"bench-client-{i:03d}"}
                                             for i, cid in enumerate(client_ids)])
    gens: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    decisions: list[dict[str, Any]] = []

    def flush() -> None:
        with ledger.session() as s:
            s.execute(insert(Generation.__table__), gens)
            if files:
                s.execute(insert(PublishedFile.__table__), files)
            if decisions:
                s.execute(insert(ModerationDecision.__table__), decisions)
        gens.clear()
        files.clear()
        decisions.clear()

    for _ in range(generations):
        gid = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        at = START + dt.timedelta(seconds=float(rng.uniform(0, 30 * 86400)))
        cid = client_ids[int(rng.integers(clients))] if rng.random() < 0.95 else None
        fate = rng.random()
        status = "published" if fate < 0.80 else "review" if fate < 0.92 else "blocked"
        prompt = f"synthetic {gid}"
        gens.append({"id": gid, "mark_id": mark_to_db(int.from_bytes(rng.bytes(8), "big")), "prompt": prompt,
                     "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest(), "model": "bench-synthetic",
                     "status": status, "client_id": cid, "created_at": at, "updated_at": at})
        if status == "published":
            before_labels = rng.random() < 0.03
            mode = None if before_labels else MODES[int(rng.integers(len(MODES)))]
            files.append({"generation_id": gid, "path": f"/out/{gid}.mp4", "sha256": hashlib.sha256(gid.encode())
                          .hexdigest(), "size_bytes": 200_000, "mime_type": "video/mp4", "signer_fingerprint": "0" * 64,
                          "created_at": at + dt.timedelta(seconds=8), "label_mode": mode,
                          "label_text": None if mode in (None, "off") else "AI-generated",
                          "manifest_verified": None if before_labels else True,
                          "watermark_read_back": None if before_labels else True})
        else:
            category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
            action = "review" if status == "review" else "block"
            reasons = [{"category": category, "score": 0.7, "threshold": 0.5, "action": action}]
            if rng.random() < 0.2:
                reasons.append({"category": CATEGORIES[int(rng.integers(len(CATEGORIES)))], "score": 0.6})
            decisions.append({"generation_id": gid, "stage": "prompt", "prompt_sha256": "0" * 64, "action": action,
                              "scores": {category: 0.7}, "reasons": reasons, "policy_version": "bench",
                              "client_id": cid, "created_at": at})
        if len(gens) >= BATCH:
            flush()
    if gens:
        flush()
    ledger.dispose()
    return {"generations": generations, "clients": clients, "fill_s": round(time.perf_counter() - t0, 1)}


def _child(url: str, mode: str, client: str | None, since: str | None, until: str | None) -> None:
    """One measurement in its own process: prints time and peak RSS as JSON."""
    from credence.compliance import Period, compliance_report, parse_moment
    from provenance.ledger import Ledger

    ledger = Ledger(url)
    t0 = time.perf_counter()
    report = None
    if mode == "report":
        report = compliance_report(ledger, Period(parse_moment(since, "since"), parse_moment(until, "until")), client)
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"seconds": round(elapsed, 3), "peak_rss_mib": round(peak, 1)}
    if report is not None:
        out |= {"published": report["totals"]["published"], "held": report["totals"]["held"]["total"],
                "blocked": report["totals"]["blocked"]["total"], "clients": len(report["clients"]),
                "digest": report["digest"]}
    print(json.dumps(out))


def _measure(url: str, mode: str, client: str | None = None, since: str | None = None,
             until: str | None = None) -> dict[str, Any]:
    args = [sys.executable, "-m", "bench.compliance", "--child", mode, "--url", url]
    for flag, value in (("--client", client), ("--since", since), ("--until", until)):
        if value:
            args += [flag, value]
    done = subprocess.run(args, capture_output=True, text=True, check=True, timeout=600,
                          cwd=Path(__file__).resolve().parents[1])
    return json.loads(done.stdout.strip().splitlines()[-1])


def label_cost(frames: int, width: int = 1920, height: int = 1080) -> dict[str, Any]:
    """Publish the same 1080p clip unlabelled, with a badge and with a moving badge; time the burn-in alone."""
    from credence.runtime import Runtime
    from credence.settings import Settings
    from provenance.label import LabelSpec, burn_in, render_label
    from provenance.publish import PublishRequest

    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = (128 + 90 * np.sin(x / 83 + y / 131)[..., None] + np.array([0, 30, -30], np.float32))
    clip = [(base + 40 * np.sin((x + 12 * t) / 29)[..., None] + rng.normal(0, 4, (height, width, 3)))
            .clip(0, 255).astype(np.uint8) for t in range(frames)]
    out: dict[str, Any] = {"frames": frames, "size": f"{width}x{height}"}
    with tempfile.TemporaryDirectory() as tmp:
        rt = Runtime(Settings.from_env({"CREDENCE_HOME": str(Path(tmp) / "home")}))
        rt.init()
        for mode in ("off", "badge", "moving"):
            spec = LabelSpec(mode=mode, text="AI-generated · bench-client" if mode == "moving" else "AI-generated")
            render_label.cache_clear()
            t0 = time.perf_counter()
            burned = sum(1 for _ in burn_in(iter(clip), spec, 24.0))
            burn_s = time.perf_counter() - t0
            gen = rt.publisher.begin(PublishRequest(prompt="bench", model_name="bench"), stage="publishing")
            t0 = time.perf_counter()
            rt.publisher.publish(gen.id, iter(clip), 24.0, Path(tmp) / f"{mode}.mp4",
                                 PublishRequest(prompt="bench", model_name="bench", label=spec))
            publish_s = time.perf_counter() - t0
            out[mode] = {"publish_s": round(publish_s, 2), "burn_in_s": round(burn_s, 3) if burned else 0.0,
                         "burn_in_share_of_publish": round(burn_s / publish_s, 4) if mode != "off" else 0.0}
        rt.ledger.dispose()
    return out


def main() -> None:
    """Run both measurements, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=100_000)
    parser.add_argument("--frames", type=int, default=24, help="frames of the 1080p clip (0: skip the label row)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", choices=("report", "baseline"))
    parser.add_argument("--url")
    parser.add_argument("--client")
    parser.add_argument("--since")
    parser.add_argument("--until")
    args = parser.parse_args()
    if args.child:
        _child(args.url, args.child, args.client, args.since, args.until)
        return
    from credence.db import upgrade

    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {"generations": args.generations, "machine": f"{os.cpu_count()} cpu, load "
                              f"{os.getloadavg()[0]:.1f}", "date": dt.date.today().isoformat()}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'ledger.db'}"
        upgrade(url)
        result["fill"] = fill(url, args.generations)
        baseline = _measure(url, "baseline")
        whole = _measure(url, "report")
        one = _measure(url, "report", client="bench-client-007", since="2026-11-08", until="2026-11-15")
        again = _measure(url, "report")
        result["report"] = {"baseline": baseline, "whole_range": whole, "one_client_7_days": one,
                            "reproducible": again["digest"] == whole["digest"]}
        rows += [("report, all clients, 30 days", whole), ("report, 1 client, 7 days", one),
                 ("baseline (open ledger only)", baseline)]
    if args.frames:
        result["label_1080p"] = label_cost(args.frames)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\ncompliance report over {args.generations:,} generations (SQLite, {result['machine']})")
    print(f"{'measure':34} {'seconds':>8} {'peak RSS MiB':>13}")
    for name, row in rows:
        print(f"{name:34} {row['seconds']:8.3f} {row['peak_rss_mib']:13.1f}")
    print(f"reproducible (same digest on a rerun): {result['report']['reproducible']}")
    if args.frames:
        lab = result["label_1080p"]
        print(f"\nlabel at {lab['size']}, {lab['frames']} frames: publish s / burn-in s / share")
        for mode in ("off", "badge", "moving"):
            m = lab[mode]
            share = 100 * m["burn_in_share_of_publish"]
            print(f"  {mode:7} {m['publish_s']:7.2f} {m['burn_in_s']:8.3f} {share:6.2f} %")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
