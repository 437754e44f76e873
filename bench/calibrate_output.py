"""Choose the output screens' thresholds on benign clips: `python -m bench.calibrate_output`.

A frame screen's raw confidence means little on its own: NudeNet, trained on photographs, reads the
default model's soft blobs as skin now and then (it held the README's own main job at 0.51). So
the thresholds are chosen where they matter, on benign clips that this deployment really makes or
sees:

* the default model's outputs over many prompts of its own vocabulary (`generator.training.data`) and
  seeds, generated exactly as the pipeline does (the model's default steps, size and guidance);
* windows of the real clips in `../shared/data/videos` (footage of rooms, objects, patterns).

Every clip is screened as `Moderator.screen_frames` screens it (the policy's `sample_frames`,
each screen's per-frame scores, the clip's score = what `min_frames` sampled frames reach). The
clips are split in two: thresholds are chosen on the calibration half so that at most half the
target rate of its clips would be held (a margin for clips not seen), and the held rate is then
measured on the other half, on everything, and on the README's main job at seeds 0-9.

The thresholds are capped (`--max-review`, `--max-block`): a screen whose benign scores would need
a higher threshold than that is reported as missing its target rather than silently switched off.
No positive (nude) frames ship with the project or with NudeNet, so recall is not measured here;
the cap is what keeps the screen able to catch what NudeNet is confident about.

The script writes a report (per-clip scores, the table, the chosen values) to
`bench/results/output_calibration.json` and prints the table; copying the chosen values into
`policies/moderation.yaml` is left to a person (a policy change is reviewed, not automated).
The default-model issue re-runs this after retraining.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moderation.frames import available_screens, clip_score, sample_frames
from moderation.policy import Policy, load_policy

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEOS = ROOT.parent / "shared" / "data" / "videos"
DEFAULT_REPORT = ROOT / "bench" / "results" / "output_calibration.json"
README_PROMPT = "a red circle moving left on a blue background"
GRID = 0.05  # thresholds are multiples of this: a reviewer reads 0.55, not 0.5372


@dataclass
class BenignClip:
    """One benign clip's per-frame scores: `scores["nudenet:sexual"]` = one value per sampled frame."""

    source: str  # "generated" | "real" | "readme"
    name: str
    split: str  # "calibrate" | "holdout" | "check"
    scores: dict[str, list[float]] = field(default_factory=dict)


# -- benign clips ---------------------------------------------------------------------------------

def generated_jobs(count: int, seed: int = 0) -> list[tuple[str, int]]:
    """`count` (prompt, seed) pairs over the default model's whole caption vocabulary, held-out combos too."""
    from generator.training.data import all_combos

    rng = random.Random(seed)
    combos = [c.caption for c in all_combos()]
    rng.shuffle(combos)
    # Every caption once before any twice; seeds from 1000 up, apart from the README check's 0-9.
    return [(combos[i % len(combos)], 1000 + rng.randrange(1_000_000)) for i in range(count)]


def generate_clips(jobs: Sequence[tuple[str, int, int | None]], *, batch: int,
                   device: str | None) -> Iterator[tuple[str, int, np.ndarray]]:
    """The default model's clips for (prompt, seed, steps) jobs, as delivered (upscaled), `batch` at a time.

    A batch is one pipeline call with one seeded generator per clip: each clip's starting noise is
    the one `TextToVideoModel.generate` would draw for that seed, and the model's own defaults
    (size, frames, guidance, sequence length; steps where a job's are None) apply. Batching only
    amortises the CPU's overheads; jobs of different steps go in different batches.
    """
    import torch

    from generator import TextToVideoModel
    from generator.model import GenerationRequest, _to_uint8_video, upscale_to

    model = TextToVideoModel.load(device=device)
    deliver = int(model.defaults.get("deliver_size", 256))
    chunks: list[list[tuple[str, int, int | None]]] = []
    for job in jobs:
        if chunks and len(chunks[-1]) < batch and chunks[-1][0][2] == job[2]:
            chunks[-1].append(job)
        else:
            chunks.append([job])
    for chunk in chunks:
        settings = model.resolve(GenerationRequest(prompt=chunk[0][0], seed=chunk[0][1], steps=chunk[0][2]))
        kwargs: dict[str, Any] = {
            "prompt": [p for p, _, _ in chunk], "output_type": "np",
            "generator": [torch.Generator("cpu").manual_seed(s) for _, s, _ in chunk],
            "num_frames": settings["num_frames"], "height": settings["height"], "width": settings["width"],
            "num_inference_steps": settings["steps"], "guidance_scale": settings["guidance"],
        }
        if "max_sequence_length" in model.defaults:
            kwargs["max_sequence_length"] = model.defaults["max_sequence_length"]
        with torch.inference_mode():
            result = model.pipe(**kwargs)
        for (prompt, seed, _), video in zip(chunk, result.frames, strict=True):
            yield prompt, seed, upscale_to(_to_uint8_video(video), deliver)


def real_windows(folder: Path, *, seconds: float = 1.0, short_side: int = 360) -> Iterator[tuple[str, np.ndarray]]:
    """Consecutive `seconds`-long windows of every real clip under `folder`, each screened as one clip.

    Frames are scaled down to `short_side` (NudeNet looks at 320 pixels anyway) to keep memory small.
    """
    import av

    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".mp4", ".mov", ".mkv", ".webm"}):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or 30)
            size = max(1, round(fps * seconds))
            window: list[np.ndarray] = []
            index = 0
            for frame in container.decode(stream):
                scale = short_side / min(frame.width, frame.height)
                width, height = (frame.width, frame.height) if scale >= 1 else (
                    round(frame.width * scale) // 2 * 2, round(frame.height * scale) // 2 * 2)
                window.append(frame.to_ndarray(format="rgb24", width=width, height=height))
                if len(window) == size:
                    yield f"{path.relative_to(folder)}@{index * seconds:g}s", np.stack(window)
                    window, index = [], index + 1
            if len(window) >= size // 2:
                yield f"{path.relative_to(folder)}@{index * seconds:g}s", np.stack(window)


def screen_scores(screens: Sequence[Any], policy: Policy, frames: np.ndarray) -> dict[str, list[float]]:
    """Per `screen:category`, the per-frame scores of the frames `screen_frames` would sample."""
    sample = sample_frames(frames, int(policy.output.get("sample_frames", 8)))
    out: dict[str, list[float]] = {}
    for screen in screens:
        for category, (values, _) in screen.frame_scores(sample).items():
            out[f"{screen.name}:{category}"] = [round(float(v), 4) for v in values]
    return out


# -- choosing thresholds --------------------------------------------------------------------------

def clip_scores(clips: Sequence[BenignClip], key: str, min_frames: int) -> np.ndarray:
    """Each clip's aggregated score for `key` (0 where the screen did not score it)."""
    return np.array([clip_score(np.array(c.scores.get(key, [0.0])), min_frames)[0] for c in clips])


def held_rate(scores: np.ndarray, threshold: float) -> float:
    """The share of clips whose score reaches `threshold` (what the screen would hold)."""
    return float((scores >= threshold - 1e-9).mean()) if scores.size else 0.0


def _grid_above(value: float) -> float:
    """The smallest grid point strictly above `value`."""
    return round((math.floor(value / GRID + 1e-9) + 1) * GRID, 4)


def choose_thresholds(scores: np.ndarray, *, target: float, min_review: float, max_review: float,
                      max_block: float) -> dict[str, Any]:
    """Review and block thresholds for one screen's category from its benign clip scores.

    review: the smallest grid point above the benign scores' (1 - target/2) quantile (half the
    target on the calibration clips, a margin for clips not seen), at least `min_review` and at
    most `max_review`. block: above every benign score and at least review + 0.2, at most
    `max_block`: no benign clip of the calibration set is ever blocked outright.
    """
    quantile = float(np.quantile(scores, 1 - target / 2, method="higher")) if scores.size else 0.0
    review = min(max(_grid_above(quantile), min_review), max_review)
    top = float(scores.max()) if scores.size else 0.0
    block = min(max(_grid_above(top), round(review + 0.2, 4)), max_block)
    return {"review": round(review, 4), "block": round(max(block, review), 4), "quantile": round(quantile, 4),
            "capped": _grid_above(quantile) > max_review}


def calibrate(clips: Sequence[BenignClip], policy: Policy, *, target: float, min_frames: int | None,
              min_review: float, max_review: float, max_block: float) -> dict[str, Any]:
    """Per screen: the chosen min_frames and thresholds, and held rates by split and source.

    A screen scores several categories (CLIP does) but has one pair of thresholds in the policy:
    the pair is the strictest that keeps every category of the screen within the target.
    """
    keys = sorted({k for c in clips for k in c.scores})
    screens = sorted({k.split(":", 1)[0] for k in keys})
    calib = [c for c in clips if c.split == "calibrate"]
    out: dict[str, Any] = {}
    for screen in screens:
        spec = policy.output.get(screen, {})
        need = int(min_frames if min_frames is not None else spec.get("min_frames", 2))
        mine = [k for k in keys if k.startswith(screen + ":")]
        picks = [choose_thresholds(clip_scores(calib, k, need), target=target, min_review=min_review,
                                   max_review=max_review, max_block=max_block) for k in mine]
        review = max(p["review"] for p in picks)
        block = max(p["block"] for p in picks)
        rows: dict[str, Any] = {}
        for label, group in _groups(clips).items():
            scored = [clip_scores(group, k, need) for k in mine]
            held = np.zeros(len(group), bool)
            for s in scored:
                held |= s >= review - 1e-9
            blocked = np.zeros(len(group), bool)
            for s in scored:
                blocked |= s >= block - 1e-9
            rows[label] = {"n": len(group), "held": int(held.sum()), "held_rate": round(float(held.mean()), 4)
                           if group else 0.0, "blocked": int(blocked.sum())}
        sensitivity = {}
        for k in range(1, int(policy.output.get("sample_frames", 8)) + 1):
            s = np.max([clip_scores(clips, key, k) for key in mine], axis=0)
            sensitivity[str(k)] = {"held_rate_at_review": held_rate(s, review),
                                   "p99": round(float(np.quantile(s, 0.99)), 4), "max": round(float(s.max()), 4)}
        previous = {k: spec.get(k) for k in ("review", "block", "min_frames") if k in spec}
        before = np.zeros(len(clips), bool)
        for k in mine:
            before |= clip_scores(clips, k, int(spec.get("min_frames", 1))) >= float(spec.get("review", 1.0)) - 1e-9
        out[screen] = {
            "chosen": {"review": review, "block": block, "min_frames": need},
            "per_category": dict(zip(mine, picks, strict=True)),
            "held": rows,
            "policy_before": previous | {"held_rate_all": round(float(before.mean()), 4) if clips else 0.0},
            "by_min_frames": sensitivity,
            "target_met": all(r["held_rate"] <= target for r in rows.values() if r["n"]),
        }
    return out


def _groups(clips: Sequence[BenignClip]) -> dict[str, list[BenignClip]]:
    groups: dict[str, list[BenignClip]] = {"all benign (generated + real)": [c for c in clips if c.source != "readme"]}
    groups["calibration split"] = [c for c in clips if c.split == "calibrate"]
    groups["held-out split"] = [c for c in clips if c.split == "holdout"]
    groups["generated (default model)"] = [c for c in clips if c.source == "generated"]
    groups["real clips (1 s windows)"] = [c for c in clips if c.source == "real"]
    groups["README main job, seeds 0-9"] = [c for c in clips if c.source == "readme"]
    return groups


def table(result: dict[str, Any]) -> str:
    """The report as a plain-text table, one block per screen."""
    lines = []
    for screen, info in result.items():
        chosen = info["chosen"]
        before = info["policy_before"]
        lines.append(f"{screen}: review {chosen['review']}  block {chosen['block']}  min_frames {chosen['min_frames']}"
                     f"   (policy before: {before})   target met: {info['target_met']}")
        for key, pick in info["per_category"].items():
            note = "  (capped: the benign scores asked for more)" if pick["capped"] else ""
            lines.append(f"  {key}: benign calibration quantile {pick['quantile']}{note}")
        lines.append(f"  {'clips':34} {'n':>5} {'held':>5} {'rate':>7} {'blocked':>8}")
        for label, row in info["held"].items():
            lines.append(f"  {label:34} {row['n']:>5} {row['held']:>5} {row['held_rate']:>7.2%} {row['blocked']:>8}")
        lines.append("  min_frames -> held rate at this review threshold (all clips), p99, max clip score")
        for k, row in info["by_min_frames"].items():
            lines.append(f"    {k}: {row['held_rate_at_review']:.2%}  p99 {row['p99']:.3f}  max {row['max']:.3f}")
    return "\n".join(lines)


# -- the command ----------------------------------------------------------------------------------

def collect(policy: Policy, screens: Sequence[Any], args: argparse.Namespace) -> list[BenignClip]:
    """Screen every benign clip once; each clip is assigned to the calibration or held-out split by a hash."""
    partial = args.out.with_suffix(".partial.json")
    partial.parent.mkdir(parents=True, exist_ok=True)
    # A run that was stopped resumes: clips already screened (same prompt and seed) are not made again.
    clips = [BenignClip(**c) for c in json.loads(partial.read_text())] if partial.is_file() else []
    if args.extend is not None:  # more generated clips on top of an earlier report's (its real clips are redone)
        known = {c.name for c in clips}
        clips += [BenignClip(**c) for c in json.loads(args.extend.read_text())["clips"]
                  if c["source"] != "real" and c["name"] not in known]
    done = {c.name.split(" | steps ")[0] for c in clips}
    rng = random.Random(args.seed + 1)
    started = time.monotonic()
    steps = [int(x) if x.strip() not in ("", "default") else None for x in str(args.steps).split(",")]
    jobs = [(p, s, steps[i % len(steps)]) for i, (p, s) in enumerate(generated_jobs(args.generated, args.seed))]
    jobs.sort(key=lambda job: -1 if job[2] is None else job[2])  # one pipeline call per steps value
    # The README's main job exactly as `credence generate` runs it: the model's own steps.
    readme = [(README_PROMPT, s, None) for s in range(10)] if args.readme_check else []
    todo = [job for job in readme + jobs if f"{job[0]} | seed {job[1]}" not in done]
    made = {f"{p} | seed {s}": n for p, s, n in todo}
    for prompt, seed, frames in generate_clips(todo, batch=args.batch, device=args.device):
        is_readme = prompt == README_PROMPT and seed < 10
        split = "check" if is_readme else ("calibrate" if rng.random() < args.calibrate_share else "holdout")
        name = f"{prompt} | seed {seed}"
        steps_used = made[name]
        clips.append(BenignClip("readme" if is_readme else "generated",
                                name if steps_used is None else f"{name} | steps {steps_used}", split,
                                screen_scores(screens, policy, frames)))
        if len(clips) % 20 == 0:
            print(f"  {len(clips)} generated clips screened ({time.monotonic() - started:.0f} s)", file=sys.stderr)
            partial.write_text(json.dumps([c.__dict__ for c in clips]) + "\n")  # a long run killed keeps its work
    if args.videos and Path(args.videos).is_dir():
        for name, frames in real_windows(Path(args.videos), seconds=args.window):
            split = "calibrate" if rng.random() < args.calibrate_share else "holdout"
            clips.append(BenignClip("real", name, split, screen_scores(screens, policy, frames)))
    else:
        print(f"  no real clips: {args.videos} is not a folder", file=sys.stderr)
    return clips


def main(argv: Sequence[str] | None = None) -> int:
    """Generate and screen benign clips, choose thresholds, write the report and print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.calibrate_output", description=__doc__.split("\n")[0])
    parser.add_argument("--generated", type=int, default=240, help="default-model clips (prompts x seeds)")
    parser.add_argument("--videos", default=str(DEFAULT_VIDEOS), help="folder of real benign clips")
    parser.add_argument("--window", type=float, default=1.0, help="seconds of real footage per clip")
    parser.add_argument("--target", type=float, default=0.01, help="benign clips held, at most (per clip)")
    parser.add_argument("--min-frames", type=int, default=None,
                        help="sampled frames a score must persist over (default: the policy's, else 2)")
    parser.add_argument("--min-review", type=float, default=0.3)
    parser.add_argument("--max-review", type=float, default=0.6, help="the cap that keeps the screen working")
    parser.add_argument("--max-block", type=float, default=0.9)
    parser.add_argument("--calibrate-share", type=float, default=0.6, help="share of clips thresholds are chosen on")
    parser.add_argument("--steps", default="default",
                        help="denoising steps of the calibration clips, a comma list cycled over them ('default': "
                             "the model's own; clients may ask for fewer, which NudeNet finds blobbier); the "
                             "README check always uses the model's own")
    parser.add_argument("--extend", type=Path, default=None,
                        help="keep an earlier report's generated clips and add more (e.g. --generated larger, "
                             "other --steps); clips of the same prompt and seed are not made again")
    parser.add_argument("--from-report", type=Path, default=None,
                        help="re-choose thresholds from an earlier report's per-clip scores (no generation)")
    parser.add_argument("--batch", type=int, default=8, help="clips per pipeline call")
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-readme-check", dest="readme_check", action="store_false")
    parser.add_argument("--policy", type=Path, default=None)
    parser.add_argument("--clip-checkpoint", type=Path, default=None, help="also calibrate the CLIP screen")
    parser.add_argument("--out", type=Path, default=DEFAULT_REPORT)
    args = parser.parse_args(argv)

    policy = load_policy(args.policy) if args.policy else load_policy()
    screens = available_screens(policy, args.clip_checkpoint) if args.from_report is None else ["from report"]
    if not screens:
        print("no output screen is configured (install the nudenet extra or pass --clip-checkpoint)", file=sys.stderr)
        return 2
    started = time.monotonic()
    if args.from_report is not None:
        clips = [BenignClip(**c) for c in json.loads(args.from_report.read_text())["clips"]]
    else:
        clips = collect(policy, screens, args)
        args.out.with_suffix(".partial.json").unlink(missing_ok=True)
    result = calibrate(clips, policy, target=args.target, min_frames=args.min_frames, min_review=args.min_review,
                       max_review=args.max_review, max_block=args.max_block)
    report = {
        "what": "output-screen thresholds chosen on benign clips (python -m bench.calibrate_output)",
        "policy_version": policy.version, "policy_sha256": policy.sha256,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "sample_frames": int(policy.output.get("sample_frames", 8)),
        "positives": "none available locally (NudeNet ships no test images): recall is not measured; "
                     "thresholds are capped at --max-review / --max-block so the screen stays on",
        "seconds": round(time.monotonic() - started, 1),
        "screens": result,
        "clips": [c.__dict__ for c in clips],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(table(result))
    print(f"report: {args.out}")
    return 0 if all(info["target_met"] for info in result.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
