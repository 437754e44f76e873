"""Why does the default model not learn direction? `python -m bench.generator_motion [--model FOLDER ...]`.

Cheap measurements (about a minute on one shared core), written to
bench/results/generator_motion_diagnosis.json:

* text path: cosine between the text encoder's states of captions that differ in one word, over the
  whole padded sequence (what `diagnose` reports) and at the differing word's own position (what
  cross-attention can actually pick out);
* temporal signal: how the Wan transformer splits each head between frame, row and column rotary
  embeddings, how many latent frames there are, and whether anything gives it an absolute position
  (Wan has no absolute position embedding: RoPE is relative);
* motion in the latent: how far the object moves per latent frame (latent pixels and 2x2 patch
  tokens), and how much of the default loss weight falls where a clip and its opposite-direction twin
  differ (the share of the loss that depends on the direction word at all);
* text use: for each attribute, the loss with that word swapped minus the loss with the right caption
  (same x_t, same t), divided by what a model that fully used the word would lose (the weighted
  squared difference of the two clean latents). 0 means the transformer ignores the word, 1 means it
  uses it fully. Measured per model folder, so a new checkpoint can be compared with the release.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from diffusers import WanTransformer3DModel
from transformers import PreTrainedTokenizerFast, UMT5EncoderModel

from generator.training import default_arch as arch
from generator.training.data import (
    BACKGROUNDS,
    COLOURS,
    DIRECTIONS,
    NUM_FRAMES,
    SHAPES,
    SIZE,
    SPEED,
    TRAIN_COMBOS,
    Combo,
    compose,
    pooled_motion_mask,
)
from generator.training.train_default import _object_weight, _stack_time, encode_prompts

RESULTS = Path(__file__).resolve().parent / "results" / "generator_motion_diagnosis.json"
SHIPPED = Path(__file__).resolve().parents[1] / "generator" / "default_model"
BASELINE = Path(__file__).resolve().parent / "results" / "generator.json"  # the release's bench (seed 0)
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def _latent(combo: Combo, along: int = 0, ortho: int = 0) -> torch.Tensor:
    clip = compose(pooled_motion_mask(combo.shape, combo.direction, along, ortho), combo)
    x = torch.from_numpy(clip[None]).permute(0, 4, 1, 2, 3) / 127.5 - 1.0
    return _stack_time(x)


def _swap(combo: Combo, attribute: str, rng: np.random.Generator) -> Combo:
    """The same combination with one attribute changed (direction: the opposite one)."""
    if attribute == "direction":
        return Combo(combo.colour, combo.shape, OPPOSITE[combo.direction], combo.background)
    table = {"colour": COLOURS, "shape": SHAPES, "background": BACKGROUNDS}[attribute]
    current = getattr(combo, attribute)
    other = [v for v in table if v != current
             and not (attribute == "colour" and v == combo.background)
             and not (attribute == "background" and v == combo.colour)]
    value = other[int(rng.integers(0, len(other)))]
    return Combo(**{**combo.__dict__, attribute: value})


def text_path(tokenizer: PreTrainedTokenizerFast, encoder: UMT5EncoderModel) -> dict:
    """Cosines between one-word-apart captions: whole sequence vs the differing word's position."""
    base = Combo("red", "circle", "left", "blue")
    out = {}
    for attribute, values in (("colour", COLOURS), ("shape", SHAPES), ("direction", DIRECTIONS),
                              ("background", BACKGROUNDS)):
        combos = [Combo(**{**base.__dict__, attribute: v}) for v in values
                  if not (attribute == "colour" and v == base.background)
                  and not (attribute == "background" and v == base.colour)]
        with torch.no_grad():
            states = encode_prompts(tokenizer, encoder, [c.caption for c in combos], "cpu")
        words = [c.caption.split() for c in combos]
        pos = next(i for i in range(len(words[0])) if len({w[i] for w in words}) > 1)
        whole, word, emb = [], [], []
        table = encoder.get_input_embeddings().weight.detach()
        ids = [tokenizer.convert_tokens_to_ids(w[pos]) for w in words]
        for i in range(len(combos)):
            for j in range(i + 1, len(combos)):
                whole.append(float(torch.cosine_similarity(states[i].flatten(), states[j].flatten(), dim=0)))
                word.append(float(torch.cosine_similarity(states[i, pos], states[j, pos], dim=0)))
                emb.append(float(torch.cosine_similarity(table[ids[i]], table[ids[j]], dim=0)))
        out[attribute] = {"whole_sequence_cosine_mean": round(float(np.mean(whole)), 4),
                          "word_position_cosine_mean": round(float(np.mean(word)), 4),
                          "input_embedding_cosine_mean": round(float(np.mean(emb)), 4),
                          "word_position": pos}
    return out


def temporal_signal(transformer: WanTransformer3DModel) -> dict:
    head_dim = transformer.config.attention_head_dim
    h_dim = 2 * (head_dim // 6)
    t_dim = head_dim - 2 * h_dim
    latent_frames = (NUM_FRAMES - 1) // arch.TEMPORAL + 1
    freqs = [1.0 / 10000 ** (2 * i / t_dim) for i in range(t_dim // 2)]
    return {
        "head_dim": head_dim, "rope_frame_dims": t_dim, "rope_row_dims": h_dim, "rope_col_dims": h_dim,
        "rope_frame_frequencies": [round(f, 5) for f in freqs],
        "latent_frames": latent_frames, "frames_per_latent_frame": arch.TEMPORAL,
        "tokens": latent_frames * (SIZE // arch.SPATIAL // 2) ** 2,
        "absolute_position_embedding": False,
        "note": ("RoPE gives attention the relative frame/row/column offset of two tokens; nothing gives a "
                 "token its absolute place, and the 2x2 patch conv has no padding, so the start position a "
                 "caption implies (left-moving objects start on the right) must be inferred from the edges "
                 "of a uniform background"),
    }


def motion_in_latent(fg_weight: float) -> dict:
    """Track length per latent frame, and the share of the default loss weight that depends on direction."""
    per_frame_px = SPEED * arch.TEMPORAL / arch.SPATIAL  # latent pixels per latent frame
    shares, track = [], []
    for combo in TRAIN_COMBOS[::7]:
        z = _latent(combo)
        twin = _latent(Combo(combo.colour, combo.shape, OPPOSITE[combo.direction], combo.background))
        zn = z / z.std()  # the loss sees normalised latents; the object test only needs relative size
        tn = twin / z.std()
        w = _object_weight(zn, fg_weight)
        differs = ((zn - tn).abs().amax(dim=1, keepdim=True) > 0.25).float()
        shares.append(float((w * differs).sum() / w.sum()))
        fg = (zn - zn[:, :, :, :1, :1]).abs().amax(dim=1)[0] > 0.25  # frames x 16 x 16
        track.append(float(fg[0].float().mean()))
    return {
        "pixels_per_frame": SPEED, "travel_pixels": SPEED * (NUM_FRAMES - 1),
        "latent_pixels_per_latent_frame": per_frame_px, "patch_tokens_per_latent_frame": per_frame_px / 2,
        "start_offset_between_opposite_directions_latent_px": SPEED * (NUM_FRAMES - 1) / arch.SPATIAL,
        "object_share_of_latent_frame": round(float(np.mean(track)), 4),
        "share_of_default_loss_weight_where_opposite_twins_differ": round(float(np.mean(shares)), 4),
    }


def text_use(folder: Path, n: int = 24, ts: tuple[float, ...] = (0.35, 0.6, 0.85), seed: int = 0) -> dict:
    """Achieved / ideal loss increase when one caption word is swapped, per attribute (0 = word ignored)."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder / "tokenizer")
    encoder = UMT5EncoderModel.from_pretrained(folder / "text_encoder").eval()
    transformer = WanTransformer3DModel.from_pretrained(folder / "transformer").eval()
    from diffusers import AutoencoderKLWan

    vae_cfg = AutoencoderKLWan.load_config(folder / "vae")
    mean = torch.tensor(vae_cfg["latents_mean"]).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae_cfg["latents_std"]).view(1, -1, 1, 1, 1)
    rng = np.random.default_rng(seed)
    combos = [TRAIN_COMBOS[i] for i in rng.choice(len(TRAIN_COMBOS), n, replace=False)]
    x0 = (torch.cat([_latent(c) for c in combos]) - mean) / std
    weight = _object_weight(x0, 3.0)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=gen)
    out: dict[str, dict] = {}
    with torch.no_grad():
        def loss_for(prompts: list[str], t: float) -> torch.Tensor:
            ctx = encode_prompts(tokenizer, encoder, prompts, "cpu")
            xt = (1 - t) * x0 + t * noise
            pred = transformer(xt, torch.full((n,), t * 1000), ctx, return_dict=False)[0]
            return ((pred - (noise - x0)).pow(2) * weight).mean(dim=(1, 2, 3, 4))

        for t in ts:
            right = loss_for([c.caption for c in combos], t)
            for attribute in ("colour", "shape", "direction", "background"):
                swapped = [_swap(c, attribute, rng) for c in combos]
                wrong = loss_for([c.caption for c in swapped], t)
                z_sw = (torch.cat([_latent(c) for c in swapped]) - mean) / std
                ideal = ((x0 - z_sw).pow(2) * weight).mean(dim=(1, 2, 3, 4))
                row = out.setdefault(attribute, {})
                row[f"t={t}"] = round(float((wrong - right).mean() / ideal.mean()), 4)
    for row in out.values():
        row["mean"] = round(float(np.mean([v for k, v in row.items() if k.startswith("t=")])), 4)
    return {"clips": n, "text_use": out, "steps": _step(folder)}


def held_out_compare(folder: Path, every: int, baseline: Path = BASELINE) -> dict:
    """Every `every`-th held-out combination at seed 0, generated and read exactly as `bench.generator` does,
    beside the release's readings of the same captions from its committed bench result (same seed).

    A subset of the bench for a box where 26 clips do not fit the time left; the captions are named.
    """
    from bench.generator import run_set
    from generator import TextToVideoModel
    from generator.training.data import HELD_OUT

    combos = list(HELD_OUT)[::every]
    model = TextToVideoModel.load(folder, device="cpu")
    scores, times, rows = run_set(model, combos, [0], None, None)
    release = json.loads(baseline.read_text())
    by_caption = {r["caption"]: r for r in release["held_out_readings"]}
    before_rows = [by_caption[c.caption] for c in combos]
    keys = ("colour", "background", "direction", "shape", "all")
    before = {k: float(np.mean([r["ok"][k] for r in before_rows])) for k in keys}
    for key in ("one_colour", "last_frame_object"):
        before[key] = float(np.mean([r["stable"][key] for r in before_rows]))
    return {"captions": [c.caption for c in combos], "seed": 0, "release_hash": release["model_hash"],
            "release": before, "candidate": scores, "candidate_seconds_per_clip_1_thread": float(np.mean(times)),
            "candidate_readings": rows}


def _step(folder: Path) -> int | None:
    path = folder / "training_dit.json"
    return json.loads(path.read_text()).get("step") if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, action="append", default=None,
                        help="pipeline folder(s) to measure text use for (default: the shipped one)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--held-out-every", type=int, default=0,
                        help="also generate every N-th held-out caption with the last --model and compare it "
                             "with the release's committed readings (0: skip)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    folders = args.model or [SHIPPED]
    start = time.time()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folders[0] / "tokenizer")
    encoder = UMT5EncoderModel.from_pretrained(folders[0] / "text_encoder").eval()
    transformer = WanTransformer3DModel.from_pretrained(folders[0] / "transformer")
    result = {
        "model": str(folders[0]),
        "text_path": text_path(tokenizer, encoder),
        "temporal_signal": temporal_signal(transformer),
        "motion_in_latent": motion_in_latent(3.0),
        "text_use_by_model": {str(f): text_use(f) for f in folders},
    }
    if args.held_out_every:
        result["held_out_subset"] = held_out_compare(folders[-1], args.held_out_every)
    result["seconds"] = round(time.time() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
