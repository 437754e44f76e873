"""The publish read-back's soft-decision headroom: where it comes from and what it predicts (issue 22).

    python -m bench.watermark_headroom                 # decoder curve + 2 keys x 6 real pieces (~4 min)
    python -m bench.watermark_headroom --keys 4

Part 1 re-derives `readback.DECODE_AMPLITUDE`: random payloads sent over a Gaussian channel of
amplitude a (noise 1) through the real list decoder; the share decoded per amplitude.

Part 2 asks whether headroom at publish predicts survival. Pieces of the real clips that the
detector bench publishes (shared/data/videos/threatexchange, shrunk to 480 px a side, as
`bench.detector.real_pieces`) are marked with the default embedder and read as the publisher
reads them: the released encode (H.264 CRF 18) and the platform copy (CRF 32, ultrafast, first look
window), with the first mark and with the read-back's stronger re-mark; three small synthetic
clips (`tests.support.make_clip`, 3 s of 256x192) beside them. Each gives the reads' p-value
margin and headroom, and three rules' decisions: the first (2 decades of p-value on both reads),
headroom alone (`HEADROOM_DB` on both) and the shipped one (`KeyedReadBack`: headroom, and the
p-value margin or `STRONG_HEADROOM_DB`), and whether the exact payload still reads after
three further attacks on the released file (CRF 35, resize 0.5, centre crop 0.9). The summary
follows the publisher: the first mark if it passes, else the stronger, else refused; and how the
published marks fare under the attacks. Writes bench/results/watermark_headroom.json.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "watermark_headroom.json"
ATTACKS = ("reencode_crf35", "scale_0.5", "crop_90")
#: The read-back's first rule: both reads 2 decades of p-value under the 1e-6 threshold.
OLD_MARGIN_DECADES = 2.0


def decoder_curve(trials: int, seed: int) -> list[dict[str, float]]:
    """Share of random payloads the list decoder returns at each channel amplitude."""
    from provenance.watermark import ecc

    rng = np.random.default_rng(seed)
    rows = []
    for a in (0.5, 0.6, 0.7, 0.72, 0.8, 0.9, 1.0, 1.2):
        ok = 0
        for _ in range(trials):
            payload = int(rng.integers(0, 2**63))
            signs = 1 - 2 * ecc.encode(payload).astype(np.float64)
            ok += ecc.decode(a * signs + rng.normal(0, 1, signs.size)) == payload
        rows.append({"amplitude": a, "decoded": ok / trials})
        print(f"amplitude {a:.2f}: decoded {ok / trials:.2f}", flush=True)
    return rows


def real_rows(keys: int, seed: int) -> list[dict[str, object]]:
    """Publish-style reads of real pieces, both rules' decisions, and survival of further attacks."""
    import torch

    from bench.detector import real_pieces
    from bench.watermark import y_psnr
    from provenance.video import write_video
    from provenance.watermark import WatermarkEmbedder, detect_watermark_file
    from provenance.watermark.layout import WatermarkKey
    from provenance.watermark.readback import PLATFORM_CRF, PLATFORM_PRESET, KeyedReadBack, stronger_embedder
    from provenance.watermark.windows import WINDOW_S
    from tests.support.attacks import apply_attack

    torch.set_num_threads(1)
    pieces = real_pieces(Path("threatexchange"), "chair-orig-22-sd-bar.mp4", [0, 9, 13.5, 18], 4)
    pieces += real_pieces(Path("threatexchange"), "pattern-hd-no-bar.mp4", [0], 3.4)
    pieces += real_pieces(Path("threatexchange"), "doorknob-hd-no-bar.mp4", [0], 4)
    # And small synthetic clips like the tests' (3 s of 256x192 at 12 fps, a smooth drifting texture).
    from provenance.video import iter_frames
    from tests.support import make_clip

    with tempfile.TemporaryDirectory(prefix="wm-headroom-src-") as src:
        for seed in range(3):
            path = make_clip(Path(src) / f"small-{seed}.mp4", frames=36, fps=12.0, seed=seed)
            pieces.append((f"make_clip-256x192-3s-{seed}", list(iter_frames(path)), 12.0))
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="wm-headroom-") as tmp:
        work = Path(tmp)
        for k in range(keys):
            rng = np.random.default_rng(seed + k)
            key = WatermarkKey(key_id=f"wm-bench-{k}", secret=bytes(rng.integers(0, 256, 32, dtype=np.uint8)))
            # The three rules are the shipped reader's, with its thresholds switched off in turn.
            rules = {"old": KeyedReadBack(key, headroom=-math.inf, strong_headroom=math.inf,
                                          margin_decades=OLD_MARGIN_DECADES),
                     "headroom": KeyedReadBack(key, strong_headroom=-math.inf),
                     "new": KeyedReadBack(key)}
            for name, frames, fps in pieces:
                mark = int(rng.integers(0, 2**63))
                row: dict[str, object] = {"key": k, "clip": name, "size": f"{frames[0].shape[1]}x{frames[0].shape[0]}"}
                steps = (("first", WatermarkEmbedder(key, mark)), ("stronger", stronger_embedder(key, mark)))
                for step, embedder in steps:
                    marked = [embedder.embed(f, j) for j, f in enumerate(frames)]
                    released, platform = work / f"{step}.mp4", work / f"{step}-platform.mp4"
                    write_video(released, iter(marked), fps, crf=18)
                    write_video(platform, iter(marked[:max(1, round(WINDOW_S * fps))]), fps, crf=PLATFORM_CRF,
                                preset=PLATFORM_PRESET)
                    reads, judged = {}, []
                    for label, path in (("released", released), ("platform", platform)):
                        margin, head = KeyedReadBack.judge(detect_watermark_file(path, [key]), mark)
                        judged.append((margin, head))
                        reads[label] = {"margin": round(margin, 2) if margin > -math.inf else None,
                                        "headroom_db": round(head, 2) if head is not None else None}
                    old, head, new = (all(rules[r].passes(m, h) for m, h in judged) for r in ("old", "headroom", "new"))
                    survives = {}
                    for attack in ATTACKS:
                        res = detect_watermark_file(apply_attack(attack, released, work / f"{attack}.mp4"), [key])
                        survives[attack] = res.payload == mark
                    row[step] = {"y_psnr": round(float(np.mean([y_psnr(m, f) for m, f in zip(marked, frames,
                                                                                              strict=True)])), 2),
                                 **reads, "old_rule_passes": old, "headroom_rule_passes": head,
                                 "new_rule_passes": new, "survives": survives}
                # What the publisher does: the first mark, else the stronger one, else refuse.
                for rule in ("old_rule", "headroom_rule", "new_rule"):
                    row[f"{rule}_publishes"] = next((step for step in ("first", "stronger")
                                                     if row[step][f"{rule}_passes"]), None)  # type: ignore[index]
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=2)
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--seed", type=int, default=300)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    start = time.time()
    curve = decoder_curve(args.trials, args.seed)
    rows = real_rows(args.keys, args.seed)

    def share(rule: str) -> dict[str, object]:
        kept = [(r, r[f"{rule}_publishes"]) for r in rows if r[f"{rule}_publishes"]]
        out: dict[str, object] = {"published": len(kept), "of": len(rows),
                                  "with_stronger": sum(1 for _, step in kept if step == "stronger")}
        for a in ATTACKS:
            out[f"then_{a}"] = round(float(np.mean([r[step]["survives"][a] for r, step in kept])), 3) if kept else None
        return out

    summary = {"old_rule": share("old_rule"), "headroom_rule": share("headroom_rule"), "new_rule": share("new_rule"),
               "admitted_by_headroom_only": [
                   {"clip": r["clip"], "key": r["key"], "step": r["new_rule_publishes"],
                    "platform": r[r["new_rule_publishes"]]["platform"],
                    "survives": r[r["new_rule_publishes"]]["survives"]}
                   for r in rows if r["new_rule_publishes"] and not r["old_rule_publishes"]]}
    result = {"decoder_curve": curve, "rows": rows, "summary": summary, "wall_s": round(time.time() - start, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{'rule':<10} {'published':>10} {'stronger':>9} " + " ".join(f"{a:>16}" for a in ATTACKS))
    for rule in ("old_rule", "headroom_rule", "new_rule"):
        s = summary[rule]
        print(f"{rule:<10} {s['published']:>5}/{s['of']:<4} {s['with_stronger']:>9} "
              + " ".join(f"{s[f'then_{a}']!s:>16}" for a in ATTACKS))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
