"""The motion recipe options of the default model's training (issue 26) and their diagnosis."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.generator_motion import motion_in_latent, temporal_signal
from generator.training import default_arch as arch
from generator.training.data import HELD_OUT, TRAIN_COMBOS
from generator.training.train_default import (
    DitConfig,
    RunConfig,
    _dit_batch,
    checkpoint_path,
    direction_twin,
    train_dit,
)

ZERO = torch.zeros(1, arch.Z_DIM, 1, 1, 1)
ONE = torch.ones(1, arch.Z_DIM, 1, 1, 1)


def test_direction_twins_are_training_combinations_that_differ_only_in_direction():
    rng = np.random.default_rng(0)
    held = set(HELD_OUT)
    for combo in TRAIN_COMBOS:
        twin = direction_twin(rng, combo)
        assert twin not in held and twin in set(TRAIN_COMBOS)
        assert twin.direction != combo.direction
        assert (twin.colour, twin.shape, twin.background) == (combo.colour, combo.shape, combo.background)


def test_a_paired_batch_shares_noise_and_t_and_differs_only_in_the_track():
    cfg = DitConfig(batch=8, cfg_dropout=0.0, direction_pairs=True, motion_weight=4.0, t_mean=0.5)
    x0, prompts, t, noise, weight = _dit_batch(np.random.default_rng(3), cfg, ZERO, ONE, "cpu")
    assert x0.shape == (8, arch.Z_DIM, 5, 16, 16)
    assert torch.equal(t[:4], t[4:]) and torch.equal(noise[:4], noise[4:])
    for a, b in zip(prompts[:4], prompts[4:], strict=True):
        diff = [i for i, (u, v) in enumerate(zip(a.split(), b.split(), strict=True)) if u != v]
        assert diff == [4]  # "a <colour> <shape> moving <direction> on a <background> background"
    assert not torch.equal(x0[:4], x0[4:])
    # the first latent frame's backgrounds agree, the objects start on opposite sides
    assert torch.equal(x0[:4, :, :, 0, 0], x0[4:, :, :, 0, 0])
    assert weight.max() > 1 + cfg.fg_weight  # motion weight on top of the object weight where tracks differ


def test_default_recipe_draws_are_unchanged_by_the_new_options():
    """t_mean=0 and no pairs: the batch is the original recipe's, so a --resume continues the same run."""
    a = _dit_batch(np.random.default_rng(9), DitConfig(batch=4), ZERO, ONE, "cpu")
    rng = np.random.default_rng(9)
    from generator.training.train_default import sample_combos, sample_latents

    combos = sample_combos(rng, 4)
    x0 = sample_latents(rng, 4, combos, 1, 3)
    prompts = [c.caption if rng.random() >= 0.1 else "" for c in combos]
    t = torch.sigmoid(torch.from_numpy(rng.standard_normal(4)).float())
    noise = torch.from_numpy(rng.standard_normal(x0.shape)).float()
    assert torch.equal(a[0], x0) and a[1] == prompts and torch.equal(a[2], t) and torch.equal(a[3], noise)


def test_paired_batches_need_an_even_batch():
    with pytest.raises(ValueError, match="even batch"):
        _dit_batch(np.random.default_rng(0), DitConfig(batch=5, direction_pairs=True), ZERO, ONE, "cpu")


@pytest.mark.slow
def test_motion_recipe_resumes_exactly(tmp_path):
    """Paired directions, motion weight and shifted t: stopped at 2 and resumed to 4 == 4 straight."""
    torch.set_num_threads(1)

    def cfg(steps: int) -> DitConfig:
        return DitConfig(steps=steps, batch=4, lr=2e-3, warmup=2, num_layers=1, heads=2, head_dim=16, ffn=32,
                         seed=5, direction_pairs=True, motion_weight=4.0, t_mean=0.5)

    quiet = {"log": lambda msg: None, "checkpoint_every": 2}
    straight = RunConfig(out=tmp_path / "a", checkpoint_dir=tmp_path / "ck-a", **quiet)
    split = RunConfig(out=tmp_path / "b", checkpoint_dir=tmp_path / "ck-b", **quiet)
    losses = train_dit(cfg(4), straight)
    train_dit(cfg(2), split)
    assert train_dit(cfg(4), split, resume=True) == losses
    a = torch.load(checkpoint_path(straight, "dit"), weights_only=False)
    b = torch.load(checkpoint_path(split, "dit"), weights_only=False)
    assert all(torch.equal(a["ema_transformer"][k], b["ema_transformer"][k]) for k in a["ema_transformer"])


def test_diagnosis_facts_about_the_latent_and_rope():
    sig = temporal_signal(arch.build_transformer())
    assert sig["rope_frame_dims"] + sig["rope_row_dims"] + sig["rope_col_dims"] == sig["head_dim"]
    assert sig["latent_frames"] == 5 and sig["tokens"] == 320
    motion = motion_in_latent(3.0)
    assert motion["patch_tokens_per_latent_frame"] == 1.0
    assert 0.1 < motion["share_of_default_loss_weight_where_opposite_twins_differ"] < 0.9
