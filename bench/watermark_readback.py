"""What the publish read-back (issue 22) costs: publish time at 720p with and without it.

    python -m bench.watermark_readback                  # 2 real 720p clips x 5 s, 2 rounds each
    python -m bench.watermark_readback --clips doorknob-hd-no-bar --rounds 1 --seconds 3

Each clip (fitted to a 1280 long side, i.e. 1280x720 for the HD sources) is published through the
real `Publisher` (label off, watermark, CRF 18 encode, fingerprints, C2PA signing, SQLite ledger)
once with the read-back and once without, alternating, `--rounds` times; the figure is the extra
wall and CPU time as a share of the publish without it, and the read-back's own detection time
(`ReadBack.seconds`). The machine is shared (2 cores, several agents): CPU seconds are the steadier
figure. Writes bench/results/watermark_readback.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.watermark import DATA, real_clip
from credence.runtime import Runtime
from credence.settings import Settings
from provenance.publish import Publisher, PublishRequest, WatermarkSpec

CLIPS = {"doorknob-hd-no-bar": "threatexchange/doorknob-hd-no-bar.mp4",
         "pattern-hd-no-bar": "threatexchange/pattern-hd-no-bar.mp4"}


def _publish(publisher: Publisher, frames: list, fps: float, out: Path) -> tuple[float, float, float | None]:
    request = PublishRequest(prompt="bench", model_name="bench")
    gen = publisher.begin(request)
    wall, cpu = time.perf_counter(), time.process_time()
    publisher.publish(gen.id, iter(frames), fps, out, request)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    with publisher.ledger.session() as s:
        from provenance.ledger import PublishedFile

        row = s.query(PublishedFile).filter(PublishedFile.generation_id == gen.id).one()
        margin = row.watermark_read_back_margin
    return wall, cpu, margin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", default=",".join(CLIPS))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "watermark_readback.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-readback-") as tmp:
        rt = Runtime(Settings.from_env({"CREDENCE_HOME": str(Path(tmp) / "home")}))
        rt.init()
        spec = rt.watermark
        plain = WatermarkSpec(spec.algorithm, spec.key_id, spec.make_marker)  # no read-back
        with_rb = rt.publisher
        without = Publisher(rt.ledger, rt.identity, trust_pem=rt.trust_pem, watermark=plain, recorders=rt.recorders)
        for name in args.clips.split(","):
            loaded = real_clip(CLIPS[name], args.seconds)
            if loaded is None:
                continue
            frames, fps = loaded
            h, w = frames[0].shape[:2]
            on, off, margins = [], [], []
            for r in range(args.rounds):
                for label, pub in (("off", without), ("on", with_rb)):
                    out = Path(tmp) / f"{name}-{label}-{r}.mp4"
                    wall, cpu, margin = _publish(pub, frames, fps, out)
                    (on if label == "on" else off).append((wall, cpu))
                    if label == "on":
                        margins.append(margin)
                    print(f"{name} {w}x{h} {len(frames)} frames read-back {label}: {wall:.2f} s wall, {cpu:.2f} s CPU"
                          + (f", margin {margin:.1f} decades" if label == "on" else ""), flush=True)
            w_on, w_off = statistics.median(x[0] for x in on), statistics.median(x[0] for x in off)
            c_on, c_off = statistics.median(x[1] for x in on), statistics.median(x[1] for x in off)
            rows.append({"clip": name, "size": f"{w}x{h}", "frames": len(frames), "fps": fps,
                         "publish_wall_s_without": round(w_off, 3), "publish_wall_s_with": round(w_on, 3),
                         "publish_cpu_s_without": round(c_off, 3), "publish_cpu_s_with": round(c_on, 3),
                         "read_back_share_wall": round((w_on - w_off) / w_off, 3),
                         "read_back_share_cpu": round((c_on - c_off) / c_off, 3),
                         "margins_decades": [round(m, 2) if m is not None else None for m in margins]})
        rt.ledger.dispose()
    result = {"data": str(DATA), "seconds": args.seconds, "rounds": args.rounds, "rows": rows,
              "mean_share_wall": round(statistics.mean(r["read_back_share_wall"] for r in rows), 3) if rows else None,
              "mean_share_cpu": round(statistics.mean(r["read_back_share_cpu"] for r in rows), 3) if rows else None}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
