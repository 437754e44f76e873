"""Generator benchmark: text-video alignment of the default model, and seconds per clip.

    python -m bench.generator                         # held-out and seen prompts, 2 seeds each
    python -m bench.generator --seeds 1 --quick       # fewer clips
    python -m bench.generator --model path/to/folder  # another checkpoint of the default's world

Alignment: every held-out combination (never in training) and as many seen ones, generated at the
model's native size and delivered size, then read by the analytic checker of `generator.training.scorer`
(background from the border, object colour from the foreground mask, direction from the centroid
track, shape from the fill ratio). The checker's own accuracy on real procedural clips is the
sanity row. The README's main job ("a red circle moving left on a blue background", seeds 0-9) is
generated and screened by the shipped policy's output screens exactly as `credence generate` does:
published (not held) and read right. Speed: wall seconds per clip at native size (17 x 64 x 64, 20
steps, CFG) with `--time-threads` torch threads, timed under /tmp/credence-timing.lock so helpers on
a shared box never time at once (the load average is recorded beside it), and the share of wall
time that publishing (watermark, H.264 encode, fingerprints, C2PA signing and the ledger commit,
into a throw-away CREDENCE_HOME) adds to generation. Writes bench/results/generator.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from generator import GenerationRequest, TextToVideoModel
from generator.training.data import HELD_OUT, TRAIN_COMBOS, all_combos, render_clip
from generator.training.scorer import score_clips

RESULTS = Path(__file__).resolve().parent / "results" / "generator.json"
TARGETS = {"colour": 0.90, "background": 0.95, "direction": 0.80, "shape": 0.60, "all": 0.50}
SPEED_TARGET_S = 20.0
README_PROMPT = "a red circle moving left on a blue background"
TIMING_LOCK = "/tmp/credence-timing.lock"  # helpers on a shared box never time at once


def readme_job(model: TextToVideoModel, seeds: list[int]) -> dict:
    """The README's main job, as `credence generate` runs it: generate, screen the output, read it.

    Published = the shipped policy's output screens neither block nor hold the clip for review.
    """
    from generator.training.data import Combo
    from generator.training.scorer import read_clip
    from moderation import Moderator, load_policy

    moderator = Moderator.load(load_policy())
    combo = Combo("red", "circle", "left", "blue")
    rows = []
    for seed in seeds:
        clip = model.generate(GenerationRequest(README_PROMPT, seed=seed))
        decision = moderator.screen_frames(clip.frames)
        reading = read_clip(clip.frames)
        ok = reading.matches(combo)
        rows.append({"seed": seed, "action": decision.action, "scores": decision.to_dict().get("scores"),
                     "read": reading.__dict__, "ok": ok})
    published = sum(r["action"] not in ("block", "review") for r in rows)
    colour_bg = sum(r["ok"]["colour"] and r["ok"]["background"] for r in rows)
    return {"prompt": README_PROMPT, "seeds": seeds, "screens": [s.name for s in moderator.frame_screens],
            "published": published, "colour_and_background_right": colour_bg,
            "all_four_right": sum(r["ok"]["all"] for r in rows), "clips": rows}


def time_clips(model: TextToVideoModel, threads: int, n: int) -> dict:
    """Wall seconds per clip at the model's defaults with `threads` torch threads, under the timing lock."""
    import fcntl

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    with open(TIMING_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        load = os.getloadavg()
        times = []
        for seed in range(n):
            start = time.perf_counter()
            model.generate(GenerationRequest(README_PROMPT, seed=seed))
            times.append(time.perf_counter() - start)
        fcntl.flock(lock, fcntl.LOCK_UN)
    torch.set_num_threads(before)
    return {"threads": threads, "clips": n, "mean": float(np.mean(times)), "median": float(np.median(times)),
            "max": float(np.max(times)), "target": SPEED_TARGET_S, "load_average_1_5_15": [round(v, 2) for v in load]}


def run_set(model: TextToVideoModel, combos: list, seeds: list[int], steps: int | None,
            guidance: float | None) -> tuple[dict, list[float], list[dict]]:
    """Generate every combo at every seed and score the clips (untimed: the timing row is separate)."""
    clips, times, rows = [], [], []
    for combo in combos:
        for seed in seeds:
            start = time.perf_counter()
            clip = model.generate(GenerationRequest(combo.caption, seed=seed, steps=steps, guidance=guidance))
            times.append(time.perf_counter() - start)
            clips.append((clip.frames, combo))
    from generator.training.scorer import frame_stability, read_clip

    for frames, combo in clips:
        reading = read_clip(frames)
        rows.append({"caption": combo.caption, "read": reading.__dict__, "ok": reading.matches(combo),
                     "stable": frame_stability(frames)})
    scores = score_clips(clips)
    for key in ("one_colour", "last_frame_object"):
        scores[key] = float(np.mean([r["stable"][key] for r in rows])) if rows else 0.0
    return scores, times, rows


def publish_share(model: TextToVideoModel, combos: list, seeds: list[int], steps: int | None) -> dict:
    """Seconds to generate vs. seconds to publish the same clips through a real Runtime."""
    import tempfile

    from credence.runtime import Runtime
    from credence.settings import Settings
    from provenance.publish import PublishRequest

    gen_s, pub_s = [], []
    with tempfile.TemporaryDirectory(prefix="credence-bench-") as home:
        runtime = Runtime(Settings.from_env({"CREDENCE_HOME": home}), actor="bench")
        runtime.init()
        publisher = runtime.publisher
        for i, combo in enumerate(combos):
            for seed in seeds:
                start = time.perf_counter()
                clip = model.generate(GenerationRequest(combo.caption, seed=seed, steps=steps))
                gen_s.append(time.perf_counter() - start)
                request = PublishRequest(prompt=combo.caption, model_name=clip.model_name,
                                         model_hash=clip.model_hash, seed=clip.seed, parameters=clip.parameters)
                start = time.perf_counter()
                gen = publisher.begin(request)
                publisher.publish(gen.id, clip.frames, clip.fps, Path(home) / f"clip{i}-{seed}.mp4", request)
                pub_s.append(time.perf_counter() - start)
        watermarked = runtime.watermark is not None
    total = float(np.sum(gen_s) + np.sum(pub_s))
    return {"clips": len(gen_s), "generate_s_mean": float(np.mean(gen_s)), "publish_s_mean": float(np.mean(pub_s)),
            "publish_share_of_wall": float(np.sum(pub_s)) / total, "watermarked": watermarked,
            "delivered_size": list(clip.frames.shape[1:3]), "frames": int(clip.frames.shape[0])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="pipeline folder (default: the shipped one)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per prompt")
    parser.add_argument("--seen", type=int, default=len(HELD_OUT), help="seen (training) prompts to score too")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the alignment clips")
    parser.add_argument("--time-threads", type=int, default=2, help="torch threads for the timed clips")
    parser.add_argument("--time-clips", type=int, default=5)
    parser.add_argument("--readme-seeds", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="half the held-out prompts, no seen ones")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    real = [(render_clip(c, i), c) for i, c in enumerate(all_combos())]
    sanity = score_clips(real)

    load_start = time.perf_counter()
    model = TextToVideoModel.load(args.model, device="cpu")
    load_s = time.perf_counter() - load_start
    seeds = list(range(args.seeds))
    held = list(HELD_OUT)[:: 2 if args.quick else 1]
    seen_n = 0 if args.quick else args.seen
    seen = [TRAIN_COMBOS[i] for i in np.random.default_rng(7).choice(len(TRAIN_COMBOS), seen_n, replace=False)]

    held_scores, _, held_rows = run_set(model, held, seeds, args.steps, args.guidance)
    seen_scores, _, _ = run_set(model, seen, seeds, args.steps, args.guidance) if seen else ({}, [], [])
    readme = readme_job(model, list(range(args.readme_seeds))) if args.readme_seeds else {}
    timing = time_clips(model, args.time_threads, args.time_clips)
    publishing = publish_share(model, held[:3], seeds[:1], args.steps)
    settings = model.resolve(GenerationRequest("x", steps=args.steps, guidance=args.guidance))

    result = {
        "model": model.name,
        "model_hash": model.weights_hash,
        "folder": str(model.folder),
        "settings": {k: settings[k] for k in ("num_frames", "height", "width", "steps", "guidance")},
        "threads": args.threads,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}",
        "checkpoint": _training_state(model.folder),
        "held_out": {"prompts": len(held), "clips": len(held) * len(seeds), **held_scores},
        "seen": {"prompts": len(seen), "clips": len(seen) * len(seeds), **seen_scores},
        "scorer_sanity_real_clips": {"clips": len(real), **sanity},
        "targets": TARGETS,
        "readme_job": readme,
        "seconds_per_clip": timing,
        "load_seconds": load_s,
        "publishing": publishing,
        "held_out_readings": held_rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"model {model.name} ({model.weights_hash[:12]}), checkpoint {result['checkpoint']}")
    print(f"{'set':<22}{'clips':>6}{'colour':>8}{'bg':>8}{'dir':>8}{'shape':>8}{'all 4':>8}"
          f"{'1 colour':>10}{'last obj':>10}")
    for label, block in (("held-out (composition)", result["held_out"]), ("seen in training", result["seen"]),
                         ("scorer on real clips", result["scorer_sanity_real_clips"]), ("target", TARGETS)):
        if "colour" not in block:
            continue
        print(f"{label:<22}{block.get('clips', ''):>6}" + "".join(
            f"{block[k]:>8.2f}" for k in ("colour", "background", "direction", "shape", "all")) + "".join(
            f"{block[k]:>10.2f}" if k in block else f"{'':>10}" for k in ("one_colour", "last_frame_object")))
    if readme:
        print(f"README job '{README_PROMPT}', seeds 0-{args.readme_seeds - 1} (screens {readme['screens']}): "
              f"published {readme['published']}/{args.readme_seeds} (target 10/10), colour + background right "
              f"{readme['colour_and_background_right']}/{args.readme_seeds} (target >= 9/10), all four "
              f"{readme['all_four_right']}/{args.readme_seeds}")
    s = result["seconds_per_clip"]
    print(f"seconds per clip ({settings['num_frames']}x{settings['height']}x{settings['width']}, "
          f"{settings['steps']} steps, {s['threads']} threads, {s['clips']} clips under {TIMING_LOCK}, load "
          f"{s['load_average_1_5_15']}): mean {s['mean']:.2f}, median {s['median']:.2f}, "
          f"max {s['max']:.2f} (target <= {SPEED_TARGET_S:.0f}); load {load_s:.2f} s")
    p = publishing
    print(f"publishing ({p['frames']} frames {p['delivered_size'][0]}x{p['delivered_size'][1]}, watermark "
          f"{'on' if p['watermarked'] else 'OFF'}): {p['publish_s_mean']:.2f} s per clip "
          f"vs {p['generate_s_mean']:.2f} s to generate = {100 * p['publish_share_of_wall']:.1f}% of wall time")
    print(f"wrote {args.out}")
    return 0


def _training_state(folder: Path) -> dict:
    state = {}
    for part in ("dit", "vae"):
        path = folder / f"training_{part}.json"
        if path.is_file():
            state[part] = json.loads(path.read_text()).get("step")
    return state


if __name__ == "__main__":
    raise SystemExit(main())
