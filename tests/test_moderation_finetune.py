"""Encoder fine-tuning: a few steps run, and a run stopped and resumed ends with the same weights.

A tiny configuration (the first layer of e5-small, eight rows, batch 4) so that it runs on a CPU
in seconds; the full run's command is in README (Moderation).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from moderation.training import finetune

ROWS = [("a man stabbing a woman, blood everywhere", "unsafe", ["violence"]),
        ("un hombre apuñalando a una mujer", "unsafe", ["violence"]),
        ("一个男人用刀刺一个女人", "unsafe", ["violence"]), ("a naked woman on a bed", "unsafe", ["sexual"]),
        ("a cat on a sofa", "safe", []), ("un gato en el sofá", "safe", []),
        ("children playing in a park", "safe", []), ("孩子们在公园里玩", "safe", [])]


def _args(data: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return finetune.parser().parse_args(
        ["--out", str(out), "--data", str(data), "--public-only", "--layers", "1", "--steps", "4", "--batch", "4",
         "--distill", "0", "--limit", "8", "--threads", "1", "--device", "cpu", "--lr", "1e-3", "--warmup", "1",
         *extra])


@pytest.mark.slow  # three short runs: ~15 s on a quiet CPU, 100 s at load 12
def test_resumed_run_equals_uninterrupted_run(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "set.jsonl").write_text("\n".join(json.dumps({"text": t, "label": lab, "categories": c, "use": "train"})
                                              for t, lab, c in ROWS), encoding="utf-8")
    whole = finetune.run(_args(data, tmp_path / "whole"))
    assert whole["done"] and whole["rows"] == 8
    part = finetune.run(_args(data, tmp_path / "split", "--stop-after", "2"))
    assert part["step"] == 2 and not part["done"] and not (tmp_path / "split" / "final.pt").exists()
    rest = finetune.run(_args(data, tmp_path / "split"))
    assert rest["done"] and rest["step"] == 4
    a = torch.load(tmp_path / "whole" / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "final.pt", weights_only=True)
    start = finetune.E5Encoder.from_wheel(finetune.e5_wheel.load(), num_layers=1).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], start[k]) for k in a)  # it trained


def test_batches_are_a_function_of_the_step() -> None:
    assert finetune.batch_indices(10, 3, 4, 0).tolist() == finetune.batch_indices(10, 3, 4, 0).tolist()
    seen = np.concatenate([finetune.batch_indices(10, s, 5, 0) for s in range(2)])
    assert sorted(seen.tolist()) == list(range(10))  # one epoch covers every row once


def test_length_bucketed_batches_are_a_function_of_the_step_and_pad_less() -> None:
    lengths = np.random.default_rng(0).integers(5, 66, 1000)
    a = [finetune.bucketed_indices(lengths, s, 32, 0, 8) for s in range(8)]
    assert all((x == finetune.bucketed_indices(lengths, s, 32, 0, 8)).all() for s, x in enumerate(a))
    pooled = np.concatenate(a)
    plain = np.concatenate([finetune.batch_indices(1000, s, 32, 0) for s in range(8)])
    assert sorted(pooled.tolist()) == sorted(plain.tolist())  # the same rows, cut by length
    padded = sum(len(x) * lengths[x].max() for x in a)
    assert padded < 0.8 * sum(32 * lengths[finetune.batch_indices(1000, s, 32, 0)].max() for s in range(8))
    assert (finetune.bucketed_indices(lengths, 3, 32, 0, 1) == finetune.batch_indices(1000, 3, 32, 0)).all()
