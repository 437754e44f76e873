"""Output screens: frame classifiers that look at a generated clip before it is published.

Prompt moderation cannot see what an innocent-looking prompt produces (I2P's prompts are the
proof), so generated frames pass their own screens, each with its own thresholds in the
policy's `output` section:

* `nudenet`: the ONNX nudity detector the optional `nudenet` wheel ships (AGPL-3.0). A frame's
  `sexual` score = the highest confidence of a policy-listed exposed-body label in it.
* `clip`: zero-shot concepts with open_clip from an operator-configured local checkpoint folder
  (open_clip's own layout: `open_clip_config.json` and the weights). A frame's score for a
  category = the softmax probability mass of its concept phrases against the policy's neutral
  phrases. Nothing is ever fetched from a hub.

Each screen scores every sampled frame (`frame_scores`); the clip's score is aggregated over them
by `clip_score`: the score that at least `min_frames` sampled frames reach (the k-th highest), so
one noisy frame (NudeNet reads the default model's soft blobs as skin now and then) does not hold
a clip, while content that is really there, and so persists over frames, still does. The policy
sets `min_frames` per screen, and `python -m bench.calibrate_output` chooses it and the
thresholds on benign clips.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelMissing
from .policy import Policy

#: Per category: one score per sampled frame, and what was seen in each frame.
FrameScores = dict[str, tuple[np.ndarray, list[str]]]


def clip_score(per_frame: np.ndarray, min_frames: int) -> tuple[float, int]:
    """The clip's score: the highest score that at least `min_frames` frames reach, and the frame it comes from.

    With `min_frames=1` this is the maximum over frames. A clip with fewer sampled frames than
    `min_frames` needs all of them (a 3-frame clip is not waved through by a setting made for 8).
    """
    values = np.asarray(per_frame, dtype=np.float64).reshape(-1)
    if values.size == 0:
        return 0.0, 0
    k = max(1, min(int(min_frames), values.size))
    order = np.argsort(-values, kind="stable")
    frame = int(order[k - 1])
    return float(values[frame]), frame


def sample_frames(frames: np.ndarray, count: int) -> np.ndarray:
    """`count` frames spread evenly over the clip, first and last included: what the screens see."""
    picks = np.unique(np.linspace(0, frames.shape[0] - 1, num=min(count, frames.shape[0])).round().astype(int))
    return np.ascontiguousarray(frames[picks]).astype(np.uint8, copy=False)


def max_over_frames(scores: FrameScores) -> dict[str, tuple[float, str]]:
    """`{category: (max over frames, what was seen there)}`: the per-screen view before aggregation."""
    out: dict[str, tuple[float, str]] = {}
    for category, (values, details) in scores.items():
        score, frame = clip_score(values, 1)
        out[category] = (score, details[frame] if details else "")
    return out


class NudeNetScreen:
    """NudeNet's detector on the CPU (onnxruntime)."""

    name = "nudenet"

    def __init__(self, labels: list[str]) -> None:
        try:
            from nudenet import NudeDetector
        except ImportError as exc:  # pragma: no cover - guarded by available_screens
            raise ModelMissing(f"nudenet is not installed ({exc}): pip install 'credence[nudenet]'") from None
        self.labels = set(labels)
        self._detector = NudeDetector()
        self._lock = threading.Lock()

    def frame_scores(self, frames: np.ndarray) -> FrameScores:
        """`{"sexual": (per frame: highest confidence of a listed label, per frame: "LABEL in sampled frame i")}`."""
        values = np.zeros(len(frames))
        details = [f"no exposed body part detected in sampled frame {i}" for i in range(len(frames))]
        for i, frame in enumerate(frames):
            # NudeNet converts its input with RGBA2BGR: hand it RGBA, and the colours arrive right.
            rgba = np.concatenate([frame, np.full((*frame.shape[:2], 1), 255, np.uint8)], axis=-1)
            with self._lock:
                found = self._detector.detect(rgba)
            for det in found:
                if det.get("class") in self.labels and float(det.get("score", 0.0)) > values[i]:
                    values[i], details[i] = float(det["score"]), f"{det['class']} in sampled frame {i}"
        return {"sexual": (values, details)}

    def score(self, frames: np.ndarray) -> dict[str, tuple[float, str]]:
        """`{"sexual": (max confidence over the frames, "LABEL in sampled frame i")}`."""
        return max_over_frames(self.frame_scores(frames))


class ClipScreen:
    """open_clip zero-shot concepts from a local checkpoint folder."""

    name = "clip"

    def __init__(self, checkpoint: Path, concepts: dict[str, list[str]], neutral: list[str]) -> None:
        import open_clip
        import torch

        if not checkpoint.is_dir() or not (checkpoint / "open_clip_config.json").is_file():
            raise ModelMissing(f"CLIP checkpoint {checkpoint} must be a folder holding open_clip_config.json "
                               "and the weights (open_clip's local-dir layout)")
        try:
            model, preprocess = open_clip.create_model_from_pretrained(f"local-dir:{checkpoint}", device="cpu")
            tokenizer = open_clip.get_tokenizer(f"local-dir:{checkpoint}")
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            raise ModelMissing(f"CLIP checkpoint {checkpoint} could not be loaded: {exc}") from None
        self.model = model.eval()
        self.preprocess = preprocess
        self.phrases: list[str] = []
        self.owner: list[str | None] = []
        for category, phrases in concepts.items():
            self.phrases += phrases
            self.owner += [category] * len(phrases)
        self.phrases += neutral
        self.owner += [None] * len(neutral)
        with torch.no_grad():
            text = self.model.encode_text(tokenizer(self.phrases))
            self.text = text / text.norm(dim=-1, keepdim=True)
        self._lock = threading.Lock()

    def frame_scores(self, frames: np.ndarray) -> FrameScores:
        """Per category: its phrases' probability mass in each frame, and each frame's top phrase."""
        import torch
        from PIL import Image

        batch = torch.stack([self.preprocess(Image.fromarray(f)) for f in frames])
        with self._lock, torch.no_grad():
            image = self.model.encode_image(batch)
            image = image / image.norm(dim=-1, keepdim=True)
            scale = float(self.model.logit_scale.exp()) if hasattr(self.model, "logit_scale") else 100.0
            probs = (scale * image @ self.text.T).softmax(dim=-1).numpy()
        out: FrameScores = {}
        for category in dict.fromkeys(o for o in self.owner if o is not None):
            cols = [i for i, o in enumerate(self.owner) if o == category]
            mass = probs[:, cols].sum(axis=1).astype(np.float64)
            tops = [cols[int(probs[f, cols].argmax())] for f in range(len(frames))]
            out[category] = (mass, [f"'{self.phrases[t]}' in sampled frame {f}" for f, t in enumerate(tops)])
        return out

    def score(self, frames: np.ndarray) -> dict[str, tuple[float, str]]:
        """Per category: (max over frames of its phrases' probability mass, the top phrase there)."""
        return max_over_frames(self.frame_scores(frames))


def available_screens(policy: Policy, clip_checkpoint: Path | None) -> list[Any]:
    """The screens this deployment can run, per the policy and what is installed and configured."""
    screens: list[Any] = []
    nude = policy.output.get("nudenet") or {}
    if nude.get("enabled", True) and nude and importlib.util.find_spec("nudenet") is not None:
        screens.append(NudeNetScreen(list(nude.get("labels") or [])))
    clip = policy.output.get("clip") or {}
    if clip_checkpoint is not None and clip and clip.get("enabled", True):
        screens.append(ClipScreen(Path(clip_checkpoint), dict(clip.get("concepts") or {}),
                                  list(clip.get("neutral") or ["a photo"])))
    return screens
