"""Keep the evaluation prompts out of training: exact, token-Jaccard and embedding near duplicates.

Evaluation-only prompts: MMA-Diffusion, T2VSafetyBench and SAFREE (`use: eval-only` rows), the
project's multilingual evaluation set, and the `eval` split of our own examples. A training row
is a leak when, after normalisation, it equals one, shares >= 0.8 of its token set with one
(Jaccard over words; over character bigrams for text without spaces, e.g. Chinese), or its
embedding has cosine >= 0.9 with one.

Speed: Jaccard uses prefix filtering (tokens ordered rarest first; two sets with Jaccard >= t
must share one of the first |A| - ceil(t|A|) + 1 tokens of each), so only candidate pairs are
compared: all pairs are covered, exactly. Cosine needs every eval prompt and training row embedded,
so `training_set` does not filter on it (the Jaccard filter catches copies and light edits); the
slow test checks a fixed sample of 30 eval prompts against their 10 most token-similar training
rows, where a paraphrase would hide.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from ..normalize import normalize
from .examples import examples

JACCARD = 0.8
COSINE = 0.9
EVAL_FILES = ("mma_diffusion", "t2vsafetybench", "safree_t2v")
MULTILINGUAL = Path(__file__).resolve().parents[1] / "data" / "multilingual_eval.jsonl"


def eval_texts(data_dir: Path) -> list[str]:
    """Every evaluation-only prompt."""
    out: list[str] = []
    for path in sorted(data_dir.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            if r.get("use") == "eval-only":
                out.append(r["text"])
    out += [json.loads(line)["text"] for line in MULTILINGUAL.read_text(encoding="utf-8").splitlines() if line.strip()]
    out += [e.text for e in examples() if e.split == "eval"]
    return out


def tokens(text: str) -> frozenset[str]:
    """The token set of a text: normalised words, or character bigrams where words run together (CJK)."""
    norm = normalize(text)
    words = re.findall(r"\w+", norm)
    out: set[str] = set()
    for w in words:
        if len(w) > 3 and any(ord(ch) >= 0x2E80 for ch in w):
            out.update(w[i:i + 2] for i in range(len(w) - 1))
        else:
            out.add(w)
    return frozenset(out)


def _prefix(toks: Sequence[str], threshold: float) -> Sequence[str]:
    return toks[: len(toks) - math.ceil(threshold * len(toks)) + 1]


def near_duplicates(train: Sequence[str], evals: Sequence[str],
                    threshold: float = JACCARD) -> list[tuple[int, int, float]]:
    """(train index, eval index, Jaccard) of every pair with Jaccard >= threshold (exact, prefix-filtered)."""
    train_sets = [tokens(t) for t in train]
    eval_sets = [tokens(t) for t in evals]
    freq = Counter(tok for s in (*train_sets, *eval_sets) for tok in s)

    def order(s: frozenset[str]) -> list[str]:
        return sorted(s, key=lambda tok: (freq[tok], tok))

    index: dict[str, list[int]] = defaultdict(list)
    for j, s in enumerate(eval_sets):
        for tok in _prefix(order(s), threshold):
            index[tok].append(j)
    out: list[tuple[int, int, float]] = []
    for i, s in enumerate(train_sets):
        if not s:
            continue
        seen: set[int] = set()
        for tok in _prefix(order(s), threshold):
            for j in index.get(tok, ()):
                if j in seen:
                    continue
                seen.add(j)
                e = eval_sets[j]
                jac = len(s & e) / len(s | e)
                if jac >= threshold:
                    out.append((i, j, jac))
    return out


def candidates(train: Sequence[str], evals: Sequence[str], k: int = 20) -> dict[int, list[int]]:
    """Per eval index, the `k` training rows sharing most tokens with it (for the sampled cosine check)."""
    index: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(train):
        for tok in tokens(t):
            index[tok].append(i)
    out: dict[int, list[int]] = {}
    for j, t in enumerate(evals):
        counts: Counter[int] = Counter()
        for tok in tokens(t):
            bucket = index.get(tok, ())
            if len(bucket) < 2000:  # very common tokens say nothing about duplication
                counts.update(bucket)
        out[j] = [i for i, _ in counts.most_common(k)]
    return out
