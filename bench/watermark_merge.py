"""Merge `bench.watermark` runs over disjoint clip sets into one result (the same JSON, the same table).

    python -m bench.watermark --issue --seconds 5 --clips proc-flat,proc-dark --out /tmp/a.json &
    python -m bench.watermark --issue --seconds 5 --clips doorknob-hd-no-bar --default-model 0 --out /tmp/b.json &
    python -m bench.watermark_merge /tmp/a.json /tmp/b.json --out bench/results/watermark.json

Why: the full issue run (11 clips x 12 attacks at 5 s, x265 included) takes hours on a shared 2-core
box at nice 10; clip subsets run side by side and are merged here. Every figure is recomputed from
the per-clip rows (`per_clip[attack][clip]`), so the merged table is what one run over all the
clips would print. A clip present in two inputs is an error: the runs must be disjoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.watermark import print_summary, summary


def merge(runs: list[dict[str, object]]) -> dict[str, object]:
    """One result from several runs over disjoint clips (the seed and seconds must agree)."""
    clips: dict[str, dict[str, object]] = {}
    per_clip: dict[str, dict[str, dict[str, float]]] = {}
    default: dict[str, dict[str, object]] = {}
    negatives = {"clips": 0, "detected": 0, "min_p": 1.0}
    seeds = {json.dumps([r["args"].get("seed"), r["args"].get("seconds")]) for r in runs}  # type: ignore[union-attr]
    if len(seeds) != 1:
        raise ValueError(f"runs differ in seed or seconds: {sorted(seeds)}")
    for run in runs:
        for name, q in run["clips"].items():  # type: ignore[union-attr]
            if name in clips:
                raise ValueError(f"clip {name} is in two runs")
            clips[name] = q
        for attack, rows in run.get("per_clip", {}).items():  # type: ignore[union-attr]
            per_clip.setdefault(attack, {}).update(rows)
        default.update(run.get("default_model") or {})  # type: ignore[arg-type]
        neg = run.get("negatives") or {}
        negatives["clips"] += int(neg.get("clips", 0))  # type: ignore[union-attr]
        negatives["detected"] += int(neg.get("detected", 0))  # type: ignore[union-attr]
        negatives["min_p"] = min(float(negatives["min_p"]), float(neg.get("min_p", 1.0)))  # type: ignore[union-attr]
    table: dict[str, dict[str, float]] = {}
    for attack, rows in per_clip.items():
        values = list(rows.values())
        agg = {k: float(np.mean([r[k] for r in values])) for k in values[0]}
        agg["min_bit_acc"] = float(min(r["bit_acc"] for r in values))
        agg["clips"] = float(len(values))
        table[attack] = agg
    first = runs[0]["args"]
    return {"clips": clips, "attacks": table, "per_clip": per_clip, "default_model": default, "baselines": {},
            "negatives": negatives, "summary": summary(clips, table, default),  # type: ignore[arg-type]
            "detection_p": runs[0].get("detection_p"),
            "args": {**first, "clips": list(clips), "merged_from": len(runs)}}  # type: ignore[dict-item]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="bench.watermark JSON results over disjoint clips")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "watermark.json")
    args = parser.parse_args()
    merged = merge([json.loads(p.read_text()) for p in args.runs])
    print(f"{'attack':30s} {'exact':>6s} {'bit acc':>8s} {'wrong':>5s} clips")
    for attack, agg in merged["attacks"].items():  # type: ignore[union-attr]
        print(f"{attack:30s} {agg['exact']:6.2f} {agg['bit_acc']:8.3f} {agg['wrong_payload']:5.2f} {agg['clips']:.0f}")
    print_summary(merged["summary"])  # type: ignore[arg-type]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(merged, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
