"""Generic pictures must not accuse: the fingerprint's planar test, measured (issue 24).

    python -m bench.fingerprint_generic                       # R^2 table + 138 gradients vs 1,000 clips (~6 min)
    python -m bench.fingerprint_generic --ledger 10000 --kinds gradient,texture,shapes,flat

Part 1: how much of each sample's picture one plane explains (`hashing.planar_r2`, the 32x32
grey the informative test already computes), for the never-published procedural clips of
`bench.detector` and for every real clip in shared/data/videos. A sample at or above
`hashing.MAX_PLANAR_R2` is not informative: it never matches, on either side.

Part 2: the false accusations it is for. A fresh ledger is filled with `--ledger` synthetic
published clips (`bench.synthetic_ledger`, seed 10: procedural scenes, some lit by a ramp, hashed by
the published side's code), then `bench.detector`'s never-published procedural clips of each kind
(the same seeds and lengths) are verified with the fingerprint alone; every verdict other than
`not_generated` is listed. On 7fc31f3's code (before the planar test) the 1,000-clip ledger gave
3 `generated` among the 138 gradients (clips 377, 594, 881).
Writes bench/results/fingerprint_generic.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

RESULTS = Path(__file__).parent / "results" / "fingerprint_generic.json"
VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
KINDS = ["texture", "shapes", "flat", "dark", "dark_texture", "noise", "gradient"]


def sample_r2(frame: np.ndarray) -> float:
    """The planar R^2 of one frame as the fingerprint sees it (grey, bars trimmed, 32x32 box)."""
    from provenance.fingerprint.hashing import content_box, planar_r2

    grey = np.asarray(Image.fromarray(frame).convert("L"), dtype=np.float32)
    top, bottom, left, right = content_box(grey)
    grey = grey[top:bottom, left:right]
    small = np.asarray(Image.fromarray(grey, mode="F").resize((32, 32), Image.Resampling.BOX), dtype=np.float64)
    return planar_r2(small)


def r2_table() -> list[dict[str, object]]:
    """R^2 statistics per procedural kind and per real clip."""
    from bench.detector import procedural_frames
    from provenance.fingerprint.hashing import MAX_PLANAR_R2
    from provenance.video import iter_frames

    def row(name: str, frames: list[np.ndarray]) -> dict[str, object]:
        v = np.array([sample_r2(f) for f in frames])
        out = {"source": name, "samples": int(v.size), "p50": round(float(np.median(v)), 3),
               "p90": round(float(np.percentile(v, 90)), 3), "max": round(float(v.max()), 3),
               "generic_share": round(float(np.mean(v >= MAX_PLANAR_R2)), 3)}
        print(f"{name:34s} {out['samples']:>5} {out['p50']:>6} {out['p90']:>6} {out['max']:>6} "
              f"{out['generic_share']:>8}", flush=True)
        return out

    print(f"{'source':34s} {'n':>5} {'p50':>6} {'p90':>6} {'max':>6} {'generic':>8}")
    rows = []
    for kind in ("gradient", "texture", "shapes"):
        frames: list[np.ndarray] = []
        for j in range(20):
            frames += procedural_frames(50_000 + KINDS.index(kind) + 7 * j, kind, frames=12)[::4]
        rows.append(row(f"procedural {kind}", frames))
    clips = sorted(p for p in VIDEOS.rglob("*") if p.suffix.lower() in (".mp4", ".mov", ".webm"))
    for path in clips:
        try:
            frames = list(iter_frames(path))[::6]
        except Exception as exc:  # a fixture this build cannot decode is reported, not fatal
            print(f"{path.name}: {exc}")
            continue
        if frames:
            rows.append(row(str(path.relative_to(VIDEOS)), frames))
    return rows


def accusations(ledger_clips: int, kinds: list[str], per_kind: int) -> dict[str, object]:
    """Fingerprint-alone verdicts of never-published procedural clips against a synthetic ledger."""
    import detector
    from bench.detector import procedural_frames
    from bench.synthetic_ledger import fill_ledger
    from credence.runtime import Runtime
    from credence.settings import Settings
    from detector import FingerprintSource
    from provenance.video import write_video

    out: dict[str, object] = {"ledger_clips": ledger_clips}
    with tempfile.TemporaryDirectory(prefix="fp-generic-") as tmp:
        root = Path(tmp)
        runtime = Runtime(Settings.from_env({"CREDENCE_HOME": str(root / "home")}))
        runtime.init()
        try:
            fill_ledger(runtime.ledger, ledger_clips, seed=10, progress=False)
            for kind in kinds:
                accused = []
                for j in range(per_kind):
                    i = KINDS.index(kind) + 7 * j
                    path = root / f"neg-proc-{i}.mp4"
                    frames = procedural_frames(50_000 + i, kind, frames=12 * (1 + i % 3))
                    write_video(path, iter(frames), 12.0, preset="veryfast")
                    verdict = detector.verify(path, runtime.verification, [FingerprintSource()])
                    details = verdict.evidence[0].details
                    if verdict.verdict != "not_generated":
                        accused.append({"clip": path.name, "verdict": verdict.verdict,
                                        "matched_seconds": details.get("matched_seconds"),
                                        "expected_seconds": details.get("expected_seconds"),
                                        "mean_distance": details.get("mean_distance")})
                    path.unlink()
                out[kind] = {"n": per_kind, "not_not_generated": len(accused), "clips": accused}
                print(f"{kind}: {len(accused)} of {per_kind} not `not_generated` {accused}", flush=True)
        finally:
            runtime.ledger.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ledger", type=int, default=1000)
    parser.add_argument("--kinds", default="gradient")
    parser.add_argument("--per-kind", type=int, default=138)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    start = time.time()
    result = {"r2": r2_table(), "accusations": accusations(args.ledger, args.kinds.split(","), args.per_kind)}
    result["wall_s"] = round(time.time() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
