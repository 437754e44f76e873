"""The moderator: a policy, rules, the classifier and the frame screens, turned into decisions.

A decision is the most severe action over the enabled categories: for each, the score is the
classifier's probability raised to the floor of any rule that matched, then compared with the
policy's `review` and `block` thresholds. Thresholds and actions are read from the policy at
decision time, so a trust-and-safety edit changes decisions without retraining. Each flagged
category carries its reason: the rule and the matched span, or the nearest labelled example.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .classifier import ONNX_ENCODERS, Embedder, Heads, features
from .errors import InvalidPrompt
from .normalize import normalize, strip_controls
from .policy import Policy, load_policy, policy_label
from .views import canonical, clause_groups, clauses, soup_view

#: Longest prompt accepted, in characters (a video prompt is a few hundred at most).
MAX_PROMPT_CHARS = 4000
#: Longest view in tokens: a longer clause is scored as windows of this many tokens, each a view
#: (a harmful sentence inside a long clause keeps its own score), all in the prompt's one batch.
WINDOW_TOKENS = 128
#: Most clauses the ONNX path scores one by one (`views.MAX_CLAUSES` for the older encoders, whose cost
#: grows with each call). A 4,000-character prompt of short sentences has at most about 250; past six, the
#: rest used to be one clause cut into 128-token windows, where a harmful last sentence was a tenth of its
#: window and lost to the mean ("... birds sing. A man slits a woman's throat." was allowed, the sentence
#: alone held). Scored alone, each clause costs its own tokens plus five, in length-bucketed runs.
ONNX_MAX_CLAUSES = 256
#: The soup view (the words hidden in token soup) repeats the prompt's content: its first windows suffice.
MAX_SOUP_WINDOWS = 4
SEVERITY = {"allow": 0, "review": 1, "block": 2}
#: What the client reads when the output screen holds its video: its prompt passed, the video did not.
OUTPUT_MESSAGES = {
    "review": "The generated video was held for review before release; you will be told the outcome.",
    "block": "The generated video was withheld because it did not meet the content policy.",
}


@dataclass(frozen=True)
class Reason:
    """Why one category was flagged."""

    category: str
    score: float
    threshold: float
    action: str
    source: str  # "rule" | "classifier" | "lexicon" | "lexicon+classifier" | "nudenet" | "clip"
    rule: str | None = None
    span: str | None = None
    nearest_example: str | None = None
    similarity: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form without empty fields."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Decision:
    """One moderation answer; `to_dict()` is what clients see."""

    action: str
    scores: dict[str, float]
    reasons: list[Reason]
    policy_version: str
    policy_hash: str
    stage: str = "prompt"
    user_message: str | None = None
    reviewer_detail: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The client's view: action, scores, reasons, policy version and hash, the user message."""
        out: dict[str, Any] = {"action": self.action, "scores": {k: round(v, 4) for k, v in self.scores.items()},
                               "reasons": [r.to_dict() for r in self.reasons], "policy_version": self.policy_version,
                               "policy_hash": self.policy_hash}
        if self.user_message:
            out["user_message"] = self.user_message
        return out | self.extra

    @property
    def policy_label(self) -> str:
        """What the ledger's generation row and the C2PA manifest say about the policy that decided."""
        return policy_label(self.policy_version, self.policy_hash)


def check_prompt(prompt: object) -> str:
    """The prompt as text, or `InvalidPrompt` with the reason (empty, too long, not text)."""
    if not isinstance(prompt, str):
        raise InvalidPrompt(f"the prompt must be text, got {type(prompt).__name__}")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidPrompt(f"the prompt is {len(prompt)} characters long; the limit is {MAX_PROMPT_CHARS}")
    if not strip_controls(prompt).strip():
        raise InvalidPrompt("the prompt is empty")
    return prompt


def flat_views(parts: list[str], soup: str | None) -> list[str]:
    """The clauses, then the soup view if any."""
    return parts + ([soup] if soup else [])


class Moderator:
    """Screens prompts (and generated frames) against one policy. Thread-safe; load once per process."""

    def __init__(self, policy: Policy, heads: Heads, frame_screens: Sequence[Any] = ()) -> None:
        self.policy = policy
        self.heads = heads
        self.frame_screens = list(frame_screens)
        self._allow = [re.compile(r"\b" + re.escape(normalize(a)) + r"\b") for a in policy.allow_list]

    @classmethod
    def load(cls, policy: Policy | None = None, *, heads: Path | None = None,
             clip_checkpoint: Path | None = None) -> Moderator:
        """The moderator for `policy` (the packaged one when None) with the shipped heads.

        Loads the sentence model now, so that a missing model fails at startup, not on a prompt.
        Frame screens: NudeNet where the optional extra is installed and the policy enables it;
        CLIP zero-shot where `clip_checkpoint` (CREDENCE_CLIP_CHECKPOINT) is set.
        """
        from .frames import available_screens

        policy = policy or load_policy()
        moderator = cls(policy, Heads.load(heads), available_screens(policy, clip_checkpoint))
        Embedder.model(moderator.heads.encoder)
        return moderator

    # -- prompts ---------------------------------------------------------------------------------
    def prepare(self, prompt: str, *, check: bool = True) -> str:
        """The normalised prompt with allow-listed phrases neutralised.

        `check=False` is for training and benchmark corpora, whose rows may exceed the length
        limit a client gets: they are cut at the limit instead of refused.
        """
        text = normalize(check_prompt(prompt) if check else prompt[:MAX_PROMPT_CHARS])
        for pattern in self._allow:
            text = pattern.sub(" ", text)
        return re.sub(r"\s+", " ", text).strip()

    def screen_prompt(self, prompt: str) -> Decision:
        """Decide on one prompt; raises `InvalidPrompt` or `ModerationUnavailable`, never allows blindly."""
        return self.screen_prompts([prompt])[0]

    def screen_prompts(self, prompts: Sequence[str]) -> list[Decision]:
        """Decide on several prompts at once (one batched embedding); same answers as one by one."""
        return self.decide([self.prepare(p) for p in prompts])

    def embed(self, texts: list[str]) -> np.ndarray:
        """Sentence embeddings with the encoder the heads were trained on."""
        return Embedder.embed(texts, encoder=self.heads.encoder)

    def decide(self, prepared: Sequence[str],
               embed: Callable[[list[list[int]]], np.ndarray] | Callable[[list[str]], np.ndarray] | None = None,
               ) -> list[Decision]:
        """Decisions for prompts already `prepare`d; `embed` maps views to embeddings (benchmarks pass a
        cache): token-id lists for the ONNX encoder, texts for the older ones.

        Each prompt is scored as a whole, clause by clause (windows of a long clause) and, for token
        soup, on the words it hides (`moderation.views`); a category's classifier score is the
        highest of these. The classifier reads `canonical` views (digits and first names folded).
        """
        texts = [t or "." for t in prepared]  # "." : a prompt made only of allow-listed phrases
        if self.heads.encoder in ONNX_ENCODERS:
            plans = self._token_plans(texts)
            view_texts = [[v for v, _ in views] for views in plans]
            # Each prompt's views run apart from other prompts' (in length buckets of its own rows,
            # `OnnxEncoder.embed_views`): int8 activations are quantised per run, so a prompt's scores
            # must not depend on which other prompts share its batch (`moderate --file`, the API and
            # the generation gate give the same answer).
            run = embed or Embedder.onnx(self.heads.encoder).embed_views
            vectors = np.concatenate([run([ids for _, ids in views]) for views in plans])  # type: ignore[arg-type]
        else:
            view_texts = [flat_views(clauses(canonical(t)), soup_view(canonical(t))) for t in texts]
            vectors = (embed or self.embed)([v for views in view_texts for v in views])  # type: ignore[arg-type]
        decisions: list[Decision] = []
        at = 0
        for text, views in zip(texts, view_texts, strict=True):
            emb = vectors[at:at + len(views)]
            at += len(views)
            if len(views) > 1:
                # The whole prompt's embedding, without a second pass through the encoder: the
                # mean of its views' (close to the embedding of the whole for short clauses).
                whole = emb.mean(axis=0)
                whole = whole / max(float(np.linalg.norm(whole)), 1e-6)
                rows, row_emb = [text, *views], np.vstack([whole[None, :], emb])
            else:
                rows, row_emb = views, emb
            probs = self.heads.scores(features([canonical(r) for r in rows], row_emb))
            decisions.append(self._decide(text, row_emb[0], probs, rows))
        return decisions

    def _token_plans(self, texts: Sequence[str]) -> list[list[tuple[str, list[int]]]]:
        """Per prompt, its views as (text, token ids). Every piece of a prompt is tokenised once (all
        prompts' pieces in one call): a clause's tokens are its pieces' tokens, up to `ONNX_MAX_CLAUSES`
        clauses each a view, a long clause cut into `WINDOW_TOKENS` windows (every token is in a view), and
        only the soup view (a different text) is tokenised apart. A repeated clause is run once
        (`OnnxEncoder.embed_views`)."""
        tokenizer = Embedder.onnx(self.heads.encoder).tokenizer
        groups = [clause_groups(canonical(t), ONNX_MAX_CLAUSES) for t in texts]
        soups = [soup_view(canonical(t)) for t in texts]
        pieces = [p for g in groups for group in g for p in group] + [s for s in soups if s]
        ids = iter(tokenizer.content(pieces))
        plans: list[list[tuple[str, list[int]]]] = []
        for g in groups:
            views: list[tuple[str, list[int]]] = []
            for group in g:
                tokens = [tok for _ in group for tok in next(ids)]
                if len(tokens) <= WINDOW_TOKENS:
                    views.append((" ".join(group), tokens))
                    continue
                for w in range(0, len(tokens), WINDOW_TOKENS):
                    window = tokens[w:w + WINDOW_TOKENS]
                    views.append((tokenizer.decode(window), window))
            plans.append(views)
        for plan, soup in zip(plans, soups, strict=True):
            if soup:  # windows too, so that no row of the batch is longer than WINDOW_TOKENS
                tokens = next(ids)
                windows = [tokens[w:w + WINDOW_TOKENS] for w in range(0, len(tokens), WINDOW_TOKENS)]
                plan += [(soup if len(windows) == 1 else tokenizer.decode(win), win)
                         for win in windows[:MAX_SOUP_WINDOWS]]
        return plans

    def decide_embedded(self, prepared: Sequence[str], embeddings: np.ndarray) -> list[Decision]:
        """Decisions for prompts scored as one view each with given whole-prompt embeddings
        (the benchmark's cross-validation over cached training rows)."""
        decisions: list[Decision] = []
        for text, emb in zip(prepared, embeddings, strict=True):
            text = text or "."
            probs = self.heads.scores(features([canonical(text)], emb[None, :]))
            decisions.append(self._decide(text, emb, probs, [text]))
        return decisions

    def _model_scores(self, probs: np.ndarray, rows: list[str]) -> tuple[dict[str, float], dict[str, str]]:
        """Per category, the highest score over the scored views, with the view it came from
        (conjunctions such as sexual_minors → sexual hold within one view, not across clauses)."""
        index = {c: i for i, c in enumerate(self.heads.categories)}
        scores: dict[str, float] = {}
        where: dict[str, str] = {}
        for category in self.policy.categories.values():
            if category.name not in index:
                continue
            column = probs[:, index[category.name]]
            if category.requires is not None and category.requires in index:
                column = np.minimum(column, probs[:, index[category.requires]])
            best = int(np.argmax(column))
            scores[category.name] = float(column[best])
            if best > 0 or len(rows) == 1:
                where[category.name] = rows[best]
        return scores, where

    def _decide(self, text: str, embedding: np.ndarray, probs: np.ndarray, rows: list[str] | None = None) -> Decision:
        rows = rows or [text]
        if probs.ndim == 1:
            probs = probs[None, :]
        scores: dict[str, float] = {}
        rule_hits: dict[str, tuple[float, str, str, str]] = {}  # category -> (score, rule, span, source)
        for rule in self.policy.rules:
            if rule.category in self.policy.disabled:
                continue
            match = rule.pattern.search(text)
            if match and rule.score > rule_hits.get(rule.category, (-1.0, "", "", ""))[0]:
                rule_hits[rule.category] = (rule.score, rule.pattern.pattern, match.group(0), "rule")
        lex = self.policy.lexicon
        matches = lex.lexicon.find(text, disabled_entries=lex.disabled_entries,
                                   disabled_kinds=lex.disabled_kinds) if lex else []
        for m in matches:
            if m.entry.category in self.policy.disabled:
                continue
            if lex.score > rule_hits.get(m.entry.category, (-1.0, "", "", ""))[0]:  # type: ignore[union-attr]
                rule_hits[m.entry.category] = (lex.score, m.entry.id, m.span, "lexicon")  # type: ignore[union-attr]
        model, where = self._model_scores(probs, rows)
        for category in self.policy.enabled:
            score = model.get(category.name, 0.0)
            if category.requires is not None:
                # A conjunction: "a child in a bedroom" is not sexual content involving minors
                # unless the prompt is also sexual. Rules (which need both parts) still apply.
                score = min(score, max(model.get(category.requires, 0.0),
                                       rule_hits.get(category.requires, (0.0, "", "", ""))[0]))
            scores[category.name] = max(score, rule_hits.get(category.name, (0.0, "", "", ""))[0])
        people = [m for m in matches if lex and m.entry.kind in lex.compose_kinds]
        if people and lex:
            # A named person and a harmful act together: the act's category goes to `compose.score`.
            for name in lex.compose_categories:
                if name in scores and lex.compose_min <= scores[name] < lex.compose_score:
                    scores[name] = lex.compose_score
                    rule_hits[name] = (lex.compose_score, f"{people[0].entry.id} + {name}", people[0].span,
                                       "lexicon+classifier")
        reasons: list[Reason] = []
        for category in self.policy.enabled:
            score = scores[category.name]
            if score >= category.block:
                action, threshold = category.action, category.block
            elif score >= category.review:
                action, threshold = "review", category.review
            else:
                continue
            hit = rule_hits.get(category.name)
            if hit is not None and hit[0] >= score:
                reasons.append(Reason(category.name, score, threshold, action, hit[3], rule=hit[1], span=hit[2]))
            else:
                near = self.heads.nearest(embedding, category.name)
                clause = where.get(category.name)
                reasons.append(Reason(category.name, score, threshold, action, "classifier",
                                      span=clause if clause and clause != text else None,
                                      nearest_example=near[0] if near else None,
                                      similarity=near[1] if near else None))
        return self._decision("prompt", scores, reasons)

    def _decision(self, stage: str, scores: dict[str, float], reasons: list[Reason],
                  extra: dict[str, Any] | None = None) -> Decision:
        reasons.sort(key=lambda r: (-SEVERITY[r.action], -r.score))
        action = reasons[0].action if reasons else "allow"
        top = self.policy.categories[reasons[0].category] if reasons else None
        return Decision(action, scores, reasons, self.policy.version, self.policy.sha256, stage,
                        user_message=top.user_message if top else None,
                        reviewer_detail="; ".join(dict.fromkeys(self.policy.categories[r.category].reviewer_detail
                                                                for r in reasons)) or None,
                        extra=extra or {})

    # -- generated frames ------------------------------------------------------------------------
    def screen_frames(self, frames: np.ndarray) -> Decision:
        """Decide on a generated clip (T x H x W x 3 uint8) before it is published.

        Samples `output.sample_frames` frames spread over the clip; each configured screen scores
        its categories in every sampled frame, and the clip's score is what at least the screen's
        `min_frames` sampled frames reach (one noisy frame does not hold a clip), compared with the
        screen's own thresholds in the policy's `output` section (chosen on benign clips by
        `python -m bench.calibrate_output`). The user message speaks of the video, not the
        prompt. Without any screen configured the clip is allowed, and the decision says so.
        """
        from .frames import clip_score, sample_frames

        if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
            raise InvalidPrompt("frames must be a T x H x W x 3 array with at least one frame")
        sample = sample_frames(frames, int(self.policy.output.get("sample_frames", 8)))
        scores: dict[str, float] = {}
        reasons: list[Reason] = []
        for screen in self.frame_screens:
            spec = self.policy.output.get(screen.name, {})
            need = int(spec.get("min_frames", 1))
            if hasattr(screen, "frame_scores"):
                per_frame = screen.frame_scores(sample)
            else:  # a screen that only knows its clip-level score
                per_frame = {c: (np.array([s]), [d]) for c, (s, d) in screen.score(sample).items()}
            for category, (values, details) in per_frame.items():
                if category in self.policy.disabled:
                    continue
                score, frame = clip_score(values, need)
                detail = details[frame] if details else ""
                if need > 1 and len(values) > 1:
                    detail += f" (clip score: reached in {min(need, len(values))} of {len(values)} sampled frames)"
                key = f"{screen.name}:{category}"
                scores[key] = score
                if score >= float(spec.get("block", 1.0)):
                    action, threshold = "block", float(spec["block"])
                elif score >= float(spec.get("review", 1.0)):
                    action, threshold = "review", float(spec["review"])
                else:
                    continue
                if category in self.policy.categories and action == "block":
                    action = self.policy.categories[category].action
                reasons.append(Reason(category, score, threshold, action, screen.name, rule=detail))
        extra = {"screens": [s.name for s in self.frame_screens], "frames_screened": len(sample)}
        if not self.frame_screens:
            extra["note"] = ("output screening not configured "
                             "(install the nudenet extra or set CREDENCE_CLIP_CHECKPOINT)")
        decision = self._decision("output", scores, reasons, extra)
        if decision.action == "allow":
            return decision
        # The category messages speak of requests; here the prompt passed and the video was held.
        return replace(decision, user_message=OUTPUT_MESSAGES[decision.action])
