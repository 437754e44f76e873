"""Where does the default model lose the prompt? `python -m generator.training.diagnose [--model FOLDER]`.

Four measurements, each scored by the analytic checker of `generator.training.scorer`, written to
bench/results/generator_diagnosis.json:

* decoder ceiling: exactly pooled latents of real clips, decoded by the folder's VAE (what the
  pipeline could show if the transformer were perfect);
* perfect-decoder ceiling: the latents the transformer denoises, decoded by nearest upsampling of the
  pooling (`unpool_latent`, no learned weights), beside the same latents through the shipped VAE;
* text path: distances after the text encoder between captions that differ in one word, per
  attribute, against identical captions (0) and the empty prompt;
* the last latent frame: per output frame, the decoder's error on exact latents and the share of
  generated frames where the checker sees no object (a collapsed frame).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from generator.training import default_arch as arch
from generator.training.data import BACKGROUNDS, COLOURS, DIRECTIONS, HELD_OUT, SHAPES, TRAIN_COMBOS, Combo, render_clip
from generator.training.scorer import FOREGROUND_DISTANCE, score_clips

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "generator_diagnosis.json"


def _to_frames(video: torch.Tensor) -> np.ndarray:
    """1 x 3 x T x H x W in [-1, 1] -> T x H x W x 3 uint8."""
    x = ((video[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()


def _latent_stats(vae: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    return mean, std


def _object_present(frames: np.ndarray) -> np.ndarray:
    """Per frame: does the checker see an object (>= 12 foreground pixels at 64x64)?"""
    x = frames.astype(np.float32) / 255.0
    t = x.shape[0]
    if x.shape[1] != 64:
        f = x.shape[1] // 64
        x = x.reshape(t, 64, f, 64, f, 3).mean(axis=(2, 4))
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1).reshape(-1, 3)
    bg = np.median(border, axis=0)
    mask = np.sqrt(((x - bg) ** 2).sum(-1)) > FOREGROUND_DISTANCE
    return mask.sum(axis=(1, 2)) >= 12


def decoder_ceiling(pipe: Any, combos: list[Combo]) -> dict:
    """Real clips -> exact pooled latent -> VAE decode -> score; also the per-frame decoder error."""
    real, decoded, unpooled, errs = [], [], [], []
    for i, combo in enumerate(combos):
        frames = render_clip(combo, i)
        x = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
        z = arch.pooled_latent(x)
        with torch.no_grad():
            out = pipe.vae.decode(z).sample
        decoded.append((_to_frames(out), combo))
        unpooled.append((_to_frames(arch.unpool_latent(z)), combo))
        real.append((frames, combo))
        errs.append((out.clamp(-1, 1) - x).abs().mean(dim=(0, 1, 3, 4)).numpy())
    err = np.mean(errs, axis=0)
    present = np.mean([_object_present(f) for f, _ in decoded], axis=0)
    return {"clips": len(combos), "real": score_clips(real), "vae_decoded": score_clips(decoded),
            "unpooled_exact": score_clips(unpooled), "decoder_mean_abs_error_per_frame": [round(float(e), 4)
                                                                                         for e in err],
            "object_present_per_frame": [round(float(p), 3) for p in present]}


def transformer_ceiling(pipe: Any, combos: list[Combo], seeds: list[int], steps: int, guidance: float) -> dict:
    """Denoised latents decoded two ways: by the shipped VAE and by a perfect (unpooling) decoder."""
    mean, std = _latent_stats(pipe.vae)
    via_vae, via_unpool, present = [], [], []
    for combo in combos:
        for seed in seeds:
            g = torch.Generator("cpu").manual_seed(seed)
            with torch.no_grad():
                lat = pipe(combo.caption, num_frames=17, height=64, width=64, num_inference_steps=steps,
                           guidance_scale=guidance, generator=g, output_type="latent").frames
                z = lat * std + mean
                dec = pipe.vae.decode(z).sample
            f_vae = _to_frames(dec)
            via_vae.append((f_vae, combo))
            via_unpool.append((_to_frames(arch.unpool_latent(z)), combo))
            present.append(_object_present(f_vae))
    return {"clips": len(via_vae), "steps": steps, "guidance": guidance, "vae_decoded": score_clips(via_vae),
            "perfect_decoder": score_clips(via_unpool),
            "object_present_per_frame_vae": [round(float(p), 3) for p in np.mean(present, axis=0)],
            "object_present_per_frame_unpool": [round(float(p), 3) for p in np.mean(
                [_object_present(f) for f, _ in via_unpool], axis=0)]}


def text_path(pipe: Any) -> dict:
    """Distances between text embeddings (as the transformer receives them) of one-word-apart captions."""
    base = Combo("red", "circle", "left", "blue")
    swaps = {"colour": [Combo(c, base.shape, base.direction, base.background) for c in COLOURS if c != "red"
                        and c != base.background],
             "shape": [Combo(base.colour, s, base.direction, base.background) for s in SHAPES if s != base.shape],
             "direction": [Combo(base.colour, base.shape, d, base.background) for d in DIRECTIONS
                           if d != base.direction],
             "background": [Combo(base.colour, base.shape, base.direction, b) for b in BACKGROUNDS
                            if b not in (base.background, base.colour)]}

    def embed(texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            e, _ = pipe.encode_prompt(texts, do_classifier_free_guidance=False,
                                      max_sequence_length=arch.MAX_SEQUENCE_LENGTH)
        return e.flatten(1)

    ref = embed([base.caption, base.caption])
    out: dict = {"identical_l2": float((ref[0] - ref[1]).norm()), "reference_norm": float(ref[0].norm())}
    empty = embed([""])[0]
    out["empty_prompt_cosine"] = float(torch.nn.functional.cosine_similarity(ref[0], empty, dim=0))
    for attr, combos in swaps.items():
        e = embed([c.caption for c in combos])
        cos = torch.nn.functional.cosine_similarity(e, ref[:1].expand_as(e), dim=1)
        l2 = (e - ref[:1]).norm(dim=1)
        out[attr] = {"cosine_mean": round(float(cos.mean()), 4), "cosine_max": round(float(cos.max()), 4),
                     "l2_mean": round(float(l2.mean()), 3), "l2_min": round(float(l2.min()), 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=arch_default())
    parser.add_argument("--prompts", type=int, default=12, help="held-out and seen prompts each")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--decoder-only", action="store_true", help="only the decoder ceiling (a VAE in training)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(args.model, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    held = list(HELD_OUT)[: args.prompts]
    seen = [TRAIN_COMBOS[i] for i in np.random.default_rng(7).choice(len(TRAIN_COMBOS), args.prompts,
                                                                      replace=False)]
    start = time.time()
    if args.decoder_only:
        d = decoder_ceiling(pipe, held + seen)
        print(json.dumps({k: d[k] for k in ("vae_decoded", "decoder_mean_abs_error_per_frame",
                                            "object_present_per_frame")}))
        return 0
    result = {
        "model": str(args.model),
        "decoder_ceiling": decoder_ceiling(pipe, held + seen),
        "text_path": text_path(pipe),
        "transformer_held_out": transformer_ceiling(pipe, held, [0], args.steps, args.guidance),
        "transformer_seen": transformer_ceiling(pipe, seen, [0], args.steps, args.guidance),
        "transformer_seen_no_cfg": transformer_ceiling(pipe, seen, [0], args.steps, 1.0),
    }
    result["seconds"] = round(time.time() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    d = result["decoder_ceiling"]
    keys = ("colour", "background", "direction", "shape", "all")
    print(f"{'what':<44}" + "".join(f"{k:>8}" for k in keys))
    rows = [("real clips", d["real"]), ("exact latent -> nearest unpool", d["unpooled_exact"]),
            ("exact latent -> shipped VAE (decoder ceiling)", d["vae_decoded"])]
    for name in ("transformer_held_out", "transformer_seen", "transformer_seen_no_cfg"):
        r = result[name]
        rows += [(f"{name} -> perfect decoder", r["perfect_decoder"]), (f"{name} -> VAE", r["vae_decoded"])]
    for label, s in rows:
        print(f"{label:<44}" + "".join(f"{s[k]:>8.2f}" for k in keys))
    print("decoder |err| per frame:", d["decoder_mean_abs_error_per_frame"])
    print("object present per frame (decoded exact):", d["object_present_per_frame"])
    print("object present per frame (generated, VAE):", result["transformer_seen"]["object_present_per_frame_vae"])
    print("object present per frame (generated, unpool):",
          result["transformer_seen"]["object_present_per_frame_unpool"])
    print("text path:", json.dumps(result["text_path"]))
    print(f"wrote {args.out}")
    return 0


def arch_default() -> Path:
    return Path(__file__).resolve().parents[1] / "default_model"


if __name__ == "__main__":
    raise SystemExit(main())
