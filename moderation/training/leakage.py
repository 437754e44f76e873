"""Keep the evaluation prompts out of training: exact, token-Jaccard and embedding near duplicates.

Evaluation-only prompts: MMA-Diffusion, T2VSafetyBench and SAFREE (`use: eval-only` rows), the
project's multilingual evaluation set, and the `eval` split of our own examples. A training row
is a leak when, after normalisation, it equals one, shares >= 0.8 of its token set with one
(Jaccard over words; over character bigrams for text without spaces, e.g. Chinese), holds >= 0.8
of one's content tokens or has >= 0.8 of its own inside one (containment: an eval prompt pasted
into a longer row), starts with the same 60 characters or is the start of one (prefix), or its
embedding has cosine >= 0.9 with one.

Speed: Jaccard and containment use prefix filtering (tokens ordered rarest first; two sets with Jaccard >= t
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
CONTAINMENT = 0.8
MIN_CONTAINED = 6
PREFIX_CHARS = 60
EVAL_FILES = ("mma_diffusion", "t2vsafetybench", "safree_t2v")
#: A word: letters, digits and the combining marks `\w` leaves out (Devanagari, Bengali, Thai vowel signs
#: are marks; without them `\w+` cuts Hindi into single consonants and every Hindi pair looks alike).
_WORD = re.compile(r"(?:\w|[\u0300-\u036f\u0900-\u0dff\u0e00-\u0eff\u1000-\u109f])+")
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
    """The token set of a text: normalised words, or character bigrams where words run together (CJK, Thai)."""
    norm = normalize(text)
    words = _WORD.findall(norm)
    out: set[str] = set()
    for w in words:
        if len(w) > 3 and any(ord(ch) >= 0x2E80 or 0x0E00 <= ord(ch) <= 0x0EFF for ch in w):
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


def _common(freq: Counter[str], n: int) -> set[str]:
    """Tokens in more than `n` texts say little about duplication (stop words, `photo`, `4k`)."""
    return {tok for tok, c in freq.items() if c > n}


def contained(train: Sequence[str], evals: Sequence[str], threshold: float = CONTAINMENT,
              min_tokens: int = MIN_CONTAINED) -> list[tuple[int, int, float]]:
    """(train index, eval index, containment) where the content tokens of one text are >= `threshold` inside the other.

    Jaccard misses an eval prompt pasted into a longer training row (or a training row that is an
    eval prompt cut short): the union grows with the extra words. Containment |A & B| / min(|A|, |B|)
    does not, so it is taken over content tokens (those in at most 1 % of the eval prompts, so that shared
    stop words do not make every pair contained) and only when the smaller side has `min_tokens` of
    them. Exact: the smaller set must share one of its first |S| - ceil(t|S|) + 1 rarest tokens with
    the larger, and every such candidate is scored.
    """
    train_sets = [tokens(t) for t in train]
    eval_sets = [tokens(t) for t in evals]
    # Common tokens are counted over the eval prompts alone: the filter must give the same answer for
    # a pair whatever else the training set holds (dropping rows must not create new pairs).
    common = _common(Counter(tok for s in eval_sets for tok in s), max(20, len(eval_sets) // 100))
    freq = Counter(tok for s in (*train_sets, *eval_sets) for tok in s)
    tr = [s - common for s in train_sets]
    ev = [s - common for s in eval_sets]

    def order(s: frozenset[str]) -> list[str]:
        return sorted(s, key=lambda tok: (freq[tok], tok))

    found: dict[tuple[int, int], float] = {}
    for small, large, flip in ((ev, tr, True), (tr, ev, False)):
        index: dict[str, list[int]] = defaultdict(list)
        for j, s in enumerate(large):
            for tok in s:
                index[tok].append(j)
        for i, s in enumerate(small):
            if len(s) < min_tokens:
                continue
            seen: set[int] = set()
            for tok in _prefix(order(s), threshold):
                for j in index.get(tok, ()):
                    if j in seen:
                        continue
                    seen.add(j)
                    inter = len(s & large[j])
                    score = inter / min(len(s), len(large[j])) if large[j] else 0.0
                    if score >= threshold and min(len(s), len(large[j])) >= min_tokens:
                        key = (j, i) if flip else (i, j)
                        found[key] = max(found.get(key, 0.0), score)
    return sorted((i, j, c) for (i, j), c in found.items())


def same_prefix(train: Sequence[str], evals: Sequence[str], chars: int = PREFIX_CHARS) -> list[tuple[int, int, float]]:
    """(train index, eval index, 1.0) where the normalised texts start with the same `chars` characters,
    or one (of at least `chars` // 2 characters) is the start of the other.

    The known leak this closes: an MMA-Diffusion string whose first 100 characters a training row
    repeats before a different tail (cosine 0.993, token Jaccard under 0.8).
    """
    norm_t = [normalize(t) for t in train]
    norm_e = [normalize(e) for e in evals]
    by_head: dict[str, list[int]] = defaultdict(list)
    for j, e in enumerate(norm_e):
        if len(e) >= chars // 2:
            by_head[e[: chars // 2]].append(j)
    out: set[tuple[int, int]] = set()
    for i, t in enumerate(norm_t):
        if len(t) < chars // 2:
            continue
        for j in by_head.get(t[: chars // 2], ()):
            e = norm_e[j]
            if t[:chars] == e[:chars] or t.startswith(e) or e.startswith(t):
                out.add((i, j))
    return [(i, j, 1.0) for i, j in sorted(out)]


def leaks(train: Sequence[str], evals: Sequence[str]) -> list[tuple[int, int, float, str]]:
    """Every (train index, eval index, score, kind) pair the filters find: Jaccard, containment, prefix."""
    out = [(i, j, s, "jaccard") for i, j, s in near_duplicates(train, evals)]
    out += [(i, j, s, "containment") for i, j, s in contained(train, evals)]
    out += [(i, j, s, "prefix") for i, j, s in same_prefix(train, evals)]
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
