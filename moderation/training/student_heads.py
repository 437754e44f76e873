"""Heads from the fine-tuned encoder's own classifier: `python -m moderation.training.student_heads`.

`finetune` trains a linear head per category together with the encoder, on every training row.
Refitting heads (`python -m moderation.train --encoder e5-ft4-int8 --embeddings ...`) needs every
training row embedded again with the new graph: tens of minutes on this shared machine. This
writes the co-trained head as a `Heads` file instead (sentence-embedding weights only; the
character n-gram block is zero, since the encoder was trained without it), with the usual
explanation exemplars (120 labelled positives per category, embedded with the new graph), so the
two can be compared on the held-out sets (`python -m bench.moderation --quick --heads ...`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ..classifier import EMBED_DIM, NGRAM_DIM, Embedder, Heads
from .train import CATEGORIES, DEFAULT_DATA, SEED, label_matrix, row_texts, training_set


def tuner_heads(checkpoint: Path, out: Path, encoder: str = "e5-ft4-int8", data: Path = DEFAULT_DATA,
                exemplars_per_category: int = 120) -> dict[str, object]:
    """Write `finetune`'s head (from its checkpoint.pt) as heads for `encoder`; returns a summary."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    head_w = state["model"]["head.weight"].numpy()
    head_b = state["model"]["head.bias"].numpy()
    weights = np.zeros((len(CATEGORIES), EMBED_DIM + NGRAM_DIM), dtype=np.float32)
    weights[:, :EMBED_DIM] = head_w * 10.0  # the Tuner scales the unit embedding by 10 before its head
    rows = training_set(data)
    y = label_matrix(rows)
    rng = np.random.default_rng(SEED)
    picked = [np.sort(rng.permutation(np.flatnonzero(y[:, c] > 0))[:exemplars_per_category])
              for c in range(len(CATEGORIES))]
    idx = np.concatenate(picked)
    texts = row_texts(rows)
    emb = Embedder.embed([texts[i] for i in idx], encoder=encoder)
    heads = Heads(CATEGORIES, weights, head_b.astype(np.float32), emb, [rows[i].text[:300] for i in idx],
                  np.concatenate([np.full(p.size, c) for c, p in enumerate(picked)]),
                  {"rows": str(len(rows)), "encoder": encoder, "step": str(state["step"]),
                   "head": "finetune (co-trained)", "benign": str(int((y.sum(1) == 0).sum()))})
    out.parent.mkdir(parents=True, exist_ok=True)
    heads.save(out)
    return {"out": str(out), "step": int(state["step"]), "exemplars": int(idx.size), "bytes": out.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="finetune's checkpoint.pt")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--encoder", default="e5-ft4-int8")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    print(json.dumps(tuner_heads(args.checkpoint, args.out, args.encoder, args.data), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
