"""The output screen: per-clip aggregation over frames, calibrated thresholds, the held-output message.

The frames in `tests/data/readme_job_seed1.npz` are the 8 frames `screen_frames` samples from the
README's main job (`credence generate "a red circle moving left on a blue background" --seed 1`)
made by the default model: NudeNet reads one of them as BUTTOCKS_EXPOSED at 0.51, which held the
clip under the old max-over-frames rule with a 0.4 threshold. The NudeNet tests run the real
detector on them (skipped where the optional extra is not installed).
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench.calibrate_output import (
    DEFAULT_REPORT,
    BenignClip,
    calibrate,
    choose_thresholds,
    clip_scores,
    held_rate,
    main,
)
from moderation import Moderator, PolicyError, load_policy, parse_policy
from moderation.classifier import Heads
from moderation.frames import clip_score
from moderation.moderator import OUTPUT_MESSAGES
from moderation.policy import default_policy_path

README_FRAMES = Path(__file__).parent / "data" / "readme_job_seed1.npz"
RAW = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
needs_nudenet = pytest.mark.skipif(importlib.util.find_spec("nudenet") is None,
                                   reason="the optional nudenet extra is not installed (credence[nudenet])")


def policy_with_output(screen: str, **values: object) -> dict:
    """The packaged policy with `output.<screen>` fields replaced."""
    data = copy.deepcopy(RAW)
    data["output"][screen].update(values)
    return data


@pytest.fixture(scope="module")
def heads() -> Heads:
    return Heads.load()


@pytest.fixture(scope="module")
def nudenet() -> object:
    from moderation.frames import NudeNetScreen

    return NudeNetScreen(RAW["output"]["nudenet"]["labels"])


@pytest.fixture(scope="module")
def readme_frames() -> np.ndarray:
    return np.load(README_FRAMES)["frames"]


class ScriptedScreen:
    """A screen whose per-frame scores are given: the aggregation under test, not a detector."""

    name = "nudenet"

    def __init__(self, values: list[float]) -> None:
        self.values = np.array(values)

    def frame_scores(self, frames: np.ndarray) -> dict[str, tuple[np.ndarray, list[str]]]:
        assert len(frames) == len(self.values)
        return {"sexual": (self.values, [f"LABEL in sampled frame {i}" for i in range(len(self.values))])}


# -- aggregation over frames --------------------------------------------------------------------------

def test_clip_score_is_what_min_frames_frames_reach() -> None:
    values = np.array([0.1, 0.9, 0.0, 0.6, 0.2])
    assert clip_score(values, 1) == (0.9, 1)
    assert clip_score(values, 2) == (0.6, 3)
    assert clip_score(values, 3) == (0.2, 4)
    # Fewer sampled frames than min_frames: all of them must reach it (a short clip is not waved through).
    assert clip_score(np.array([0.8, 0.7]), 4) == (0.7, 1)
    assert clip_score(np.array([]), 2) == (0.0, 0)


def test_one_noisy_frame_does_not_hold_a_clip_but_a_persistent_detection_does(heads: Heads) -> None:
    policy = parse_policy(policy_with_output("nudenet", review=0.5, block=0.8, min_frames=2), sha256="x")
    frames = np.zeros((8, 32, 32, 3), np.uint8)
    one = Moderator(policy, heads, [ScriptedScreen([0, 0, 0.95, 0, 0, 0, 0, 0])]).screen_frames(frames)
    assert one.action == "allow" and one.scores["nudenet:sexual"] == 0.0
    two = Moderator(policy, heads, [ScriptedScreen([0, 0, 0.95, 0.6, 0, 0, 0, 0])]).screen_frames(frames)
    assert two.action == "review" and two.scores["nudenet:sexual"] == pytest.approx(0.6)
    assert "sampled frame 3" in two.reasons[0].rule and "2 of 8 sampled frames" in two.reasons[0].rule
    many = Moderator(policy, heads, [ScriptedScreen([0.9] * 8)]).screen_frames(frames)
    assert many.action == "block"
    # min_frames 1 is the old rule: the single frame holds the clip.
    old = parse_policy(policy_with_output("nudenet", review=0.5, block=0.8, min_frames=1), sha256="x")
    assert Moderator(old, heads, [ScriptedScreen([0, 0, 0.95, 0, 0, 0, 0, 0])]).screen_frames(frames).action == "block"


@needs_nudenet
def test_readme_main_job_is_published_under_the_packaged_policy(heads: Heads, nudenet: object,
                                                                 readme_frames: np.ndarray) -> None:
    policy = load_policy()
    decision = Moderator(policy, heads, [nudenet]).screen_frames(readme_frames)
    assert decision.action == "allow", decision.to_dict()
    # The same frames under the old rule (max over frames, review 0.4) are held: the aggregation is what changed.
    old = parse_policy(policy_with_output("nudenet", review=0.4, block=0.7, min_frames=1), sha256="x")
    held = Moderator(old, heads, [nudenet]).screen_frames(readme_frames)
    assert held.action == "review" and held.scores["nudenet:sexual"] == pytest.approx(0.51, abs=0.02)


@needs_nudenet
def test_held_output_message_speaks_of_the_video_not_the_prompt(heads: Heads, nudenet: object,
                                                                readme_frames: np.ndarray) -> None:
    strict = parse_policy(policy_with_output("nudenet", review=0.0, block=0.9, min_frames=1), sha256="x")
    held = Moderator(strict, heads, [nudenet]).screen_frames(readme_frames)
    assert held.action == "review" and held.stage == "output"
    message = held.to_dict()["user_message"]
    assert message == OUTPUT_MESSAGES["review"] and "video" in message and "request" not in message
    blocked = parse_policy(policy_with_output("nudenet", review=0.0, block=0.0), sha256="x")
    assert Moderator(blocked, heads, [nudenet]).screen_frames(readme_frames).user_message == OUTPUT_MESSAGES["block"]


@pytest.mark.parametrize(("values", "field"), [
    ({"min_frames": 0}, "output.nudenet.min_frames"),
    ({"min_frames": 1.5}, "output.nudenet.min_frames"),
    ({"review": 0.8, "block": 0.5}, "output.nudenet.block"),
])
def test_output_section_is_validated(values: dict, field: str) -> None:
    with pytest.raises(PolicyError, match=field.replace(".", r"\.")):
        parse_policy(policy_with_output("nudenet", **values), sha256="x")


# -- choosing thresholds ------------------------------------------------------------------------------

def test_thresholds_hold_at_most_half_the_target_on_calibration_scores_and_are_capped() -> None:
    rng = np.random.default_rng(0)
    scores = np.concatenate([np.zeros(150), rng.uniform(0.2, 0.55, 100)])
    chosen = choose_thresholds(scores, target=0.01, min_review=0.3, max_review=0.6, max_block=0.9)
    assert held_rate(scores, chosen["review"]) <= 0.005 and not chosen["capped"]
    assert chosen["block"] > scores.max() and chosen["block"] >= chosen["review"] + 0.2 - 1e-9
    assert round(chosen["review"] / 0.05, 6).is_integer()
    # Benign scores so high that the target would need a threshold above the cap: capped, and said so.
    loud = choose_thresholds(np.full(200, 0.8), target=0.01, min_review=0.3, max_review=0.6, max_block=0.9)
    assert loud["review"] == 0.6 and loud["capped"]


def _clips(rows: list[list[float]], source: str = "generated") -> list[BenignClip]:
    return [BenignClip(source, f"clip {i}", "calibrate" if i % 2 else "holdout", {"nudenet:sexual": r})
            for i, r in enumerate(rows)]


def test_calibration_reports_held_rates_and_rechooses_from_a_report(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = [[0.0] * 8 for _ in range(200)]
    for row in rows[:60]:  # a third of the clips have a stray detection, a few two
        row[int(rng.integers(8))] = float(rng.uniform(0.3, 0.7))
    for row in rows[:8]:
        row[0] = row[1] = 0.45
    readme = BenignClip("readme", "README seed 1", "check", {"nudenet:sexual": [0.0] * 6 + [0.51, 0.34]})
    clips = [*_clips(rows), readme]
    result = calibrate(clips, load_policy(), target=0.01, min_frames=2, min_review=0.3, max_review=0.6,
                       max_block=0.9)["nudenet"]
    assert result["chosen"]["min_frames"] == 2 and result["chosen"]["review"] == 0.5
    assert result["target_met"] and result["held"]["README main job, seeds 0-9"]["held"] == 0
    assert result["by_min_frames"]["1"]["held_rate_at_review"] > 0.01  # the single-frame rule would not meet it

    report = tmp_path / "earlier.json"
    report.write_text(json.dumps({"clips": [c.__dict__ for c in clips]}))
    out = tmp_path / "again.json"
    assert main(["--from-report", str(report), "--out", str(out), "--min-frames", "2"]) == 0
    again = json.loads(out.read_text())
    assert again["screens"]["nudenet"]["chosen"] == result["chosen"] and len(again["clips"]) == len(clips)


def test_packaged_thresholds_hold_at_most_one_percent_of_the_measured_benign_clips() -> None:
    """The policy's nudenet values against the committed calibration report (>= 200 benign clips)."""
    if not DEFAULT_REPORT.is_file():
        pytest.skip(f"{DEFAULT_REPORT} not written yet: python -m bench.calibrate_output")
    clips = [BenignClip(**c) for c in json.loads(DEFAULT_REPORT.read_text())["clips"]]
    spec = load_policy().output["nudenet"]
    benign = [c for c in clips if c.source != "readme"]
    readme = [c for c in clips if c.source == "readme"]
    assert len(benign) >= 200 and len(readme) == 10
    need = int(spec.get("min_frames", 1))
    assert held_rate(clip_scores(benign, "nudenet:sexual", need), float(spec["review"])) <= 0.01
    assert held_rate(clip_scores(readme, "nudenet:sexual", need), float(spec["review"])) == 0.0
    assert float(spec["review"]) <= 0.6 and need <= 4  # the cap: the screen still holds what NudeNet is sure of
