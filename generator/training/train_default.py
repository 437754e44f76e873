"""Train the shipped default model: `python -m generator.train_default`.

Two independent parts, because the latent is fixed (see `generator.training.default_arch`):

* `dit`: the Wan transformer and the UMT5 text encoder, by rectified flow on pooled latents
  (velocity target noise - x0, logit-normal t, 10% caption dropout for classifier-free guidance,
  AdamW with EMA weights shipped);
* `vae`: the Wan VAE's decoder, to turn pooled latents back into 64x64 clips, and its encoder, to
  produce them.

Both are deterministic for a given seed and step count (the minute caps only stop early). Each part
writes its components into the output folder with `save_pretrained` every `--checkpoint-every`
steps, so the folder is a loadable `WanPipeline` from the first checkpoint on. The parts can run at
the same time in two processes (`--part dit` and `--part vae`), one thread each.

CPU (one thread): about 0.8 s per DiT step at batch 16, 1.7 s per VAE step at batch 4.
GPU: pass `--device cuda --batch 128`, which trains the same recipe in minutes.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from diffusers import WanPipeline
from transformers import PreTrainedTokenizerFast

from generator.training import default_arch as arch
from generator.training.data import (
    ALONG_JITTER,
    NUM_FRAMES,
    ORTHO_JITTER,
    SIZE,
    TRAIN_COMBOS,
    Combo,
    compose,
    motion_mask,
    pooled_motion_mask,
    sample_position,
)

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "default_model"
# Training state lives outside the installed package, at the repository's top level.
DEFAULT_CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints" / "default_model"
GENERATION_DEFAULTS = {
    # Read by generator.model when loading this folder; diffusers ignores the file.
    "name": "credence-default-t2v",
    "num_frames": NUM_FRAMES,
    "height": SIZE,
    "width": SIZE,
    "num_inference_steps": 20,
    "guidance_scale": 4.0,
    "max_sequence_length": arch.MAX_SEQUENCE_LENGTH,
    "fps": 8.0,
    "deliver_size": 256,
    # Trained at 17 x 64 x 64; other sizes run (RoPE positions) but drift from what it learned.
    "min_frames": 5,
    "max_frames": 65,
    "min_size": 32,
    "max_size": 256,
}
DEFAULTS_FILE = "credence_defaults.json"


@dataclass
class DitConfig:
    steps: int = 6000
    batch: int = 16
    lr: float = 8e-4
    warmup: int = 100
    ema: float = 0.998
    cfg_dropout: float = 0.1
    # Position jitter of the training clips (pixels): narrower than the data module's, so that each
    # caption names nearly one clip and the model spends its samples on colour, shape and motion.
    along_jitter: int = 1
    ortho_jitter: int = 3
    fg_weight: float = 3.0  # extra loss weight on latent pixels the object covers (a few % of the frame)
    # Motion recipe (issue 26), all off by default so a plain --resume continues the same run.
    # direction_pairs: the second half of each batch is the first half with another direction (same
    # colour, shape, background, jitter, noise and t), so only the direction word tells the two targets
    # apart and its gradient is not averaged away; motion_weight: extra loss weight where a clip and its
    # twin differ (the track); t_mean: location of the logit-normal t (> 0 spends steps at high noise,
    # where the layout, i.e. the start position and the track, is decided).
    direction_pairs: bool = False
    motion_weight: float = 0.0
    t_mean: float = 0.0
    num_layers: int = 6
    heads: int = 4
    head_dim: int = 32
    ffn: int = 512
    seed: int = 0


@dataclass
class VaeConfig:
    steps: int = 200
    batch: int = 2
    lr: float = 1e-3
    frames: int = 17  # all five latent frames, so the last one's causal cache is trained too
    enc_frames: int = 9
    latent_noise: float = 0.03  # decoder sees slightly noisy latents, as it will from the transformer
    fg_weight: float = 8.0  # extra loss weight on object pixels (learned decoder only)
    base_dim: int = 24
    # The decoder is set by `default_arch.set_exact_decoder` (exact inverse of the fixed latent) and
    # only the encoder trains; False learns the decoder too (it lost the object's colour).
    exact_decoder: bool = True
    seed: int = 1


@dataclass
class RunConfig:
    out: Path = DEFAULT_OUT
    device: str = "cpu"
    checkpoint_every: int = 500
    vae_checkpoint_every: int = 200
    max_minutes: float | None = None
    checkpoint_dir: Path = DEFAULT_CHECKPOINTS
    checkpoint_minutes: float = 5.0
    init: Path | None = None
    log: Callable[[str], None] = field(default=lambda msg: print(msg, flush=True))


def latent_stats() -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the pooled latent over a fixed sample of training clips."""
    rng = np.random.default_rng(12345)
    lat = sample_latents(rng, 512)
    mean = lat.mean(dim=(0, 2, 3, 4))
    std = lat.std(dim=(0, 2, 3, 4))
    # Channels repeat RGB four times; share the statistics so the latent stays symmetric in time.
    mean = mean.view(4, 3).mean(0).repeat(4)
    std = std.view(4, 3).mean(0).repeat(4)
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]


def sample_combos(rng: np.random.Generator, n: int) -> list[Combo]:
    return [TRAIN_COMBOS[i] for i in rng.integers(0, len(TRAIN_COMBOS), n)]


_TRAIN_SET = frozenset(TRAIN_COMBOS)
_OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def direction_twin(rng: np.random.Generator, combo: Combo) -> Combo:
    """The same colour, shape and background moving another way; a training combination, never a held-out one.

    The opposite direction when it is in training (the clips then differ most), else one of the others.
    """
    opposite = Combo(combo.colour, combo.shape, _OPPOSITE[combo.direction], combo.background)
    if opposite in _TRAIN_SET:
        return opposite
    others = [Combo(combo.colour, combo.shape, d, combo.background) for d in _OPPOSITE if d != combo.direction]
    others = [c for c in others if c in _TRAIN_SET]
    if not others:  # cannot happen with a 10% hold-out, but never train on a held-out caption
        return combo
    return others[int(rng.integers(0, len(others)))]


def sample_pair_latents(rng: np.random.Generator, combos: list[Combo], twins: list[Combo], along_jitter: int,
                        ortho_jitter: int) -> torch.Tensor:
    """Pooled latents of `combos` then `twins`, each twin at its combo's jitter (2n x 12 x 5 x 16 x 16)."""
    clips, twin_clips = [], []
    for combo, twin in zip(combos, twins, strict=True):
        along, ortho = sample_position(rng, along_jitter, ortho_jitter)
        clips.append(compose(pooled_motion_mask(combo.shape, combo.direction, along, ortho), combo))
        twin_clips.append(compose(pooled_motion_mask(twin.shape, twin.direction, along, ortho), twin))
    x = torch.from_numpy(np.stack(clips + twin_clips)).permute(0, 4, 1, 2, 3) / 127.5 - 1.0
    return _stack_time(x)


def sample_latents(rng: np.random.Generator, n: int, combos: list[Combo] | None = None,
                   along_jitter: int = ALONG_JITTER, ortho_jitter: int = ORTHO_JITTER) -> torch.Tensor:
    """Pooled latents (un-normalised, B x 12 x 5 x 16 x 16) of random training clips, built from cached masks."""
    combos = combos if combos is not None else sample_combos(rng, n)
    clips = []
    for combo in combos:
        along, ortho = sample_position(rng, along_jitter, ortho_jitter)
        pooled = compose(pooled_motion_mask(combo.shape, combo.direction, along, ortho), combo)  # T x h x w x 3
        clips.append(pooled)
    x = torch.from_numpy(np.stack(clips)).permute(0, 4, 1, 2, 3) / 127.5 - 1.0
    # pooled_latent on an already pooled clip: pool by 1, i.e. only the temporal stacking.
    return _stack_time(x)


def _stack_time(pooled: torch.Tensor) -> torch.Tensor:
    b, c, t, h, w = pooled.shape
    k = (t - 1) // arch.TEMPORAL
    first = pooled[:, :, :1].repeat(1, arch.TEMPORAL, 1, 1, 1)
    rest = pooled[:, :, 1:].reshape(b, c, k, arch.TEMPORAL, h, w).permute(0, 3, 1, 2, 4, 5)
    return torch.cat([first, rest.reshape(b, arch.TEMPORAL * c, k, h, w)], dim=2)


def sample_clips(rng: np.random.Generator, n: int, frames: int) -> torch.Tensor:
    """Full-resolution training clips in [-1, 1], B x 3 x frames x 64 x 64 (rounded to uint8 as delivered)."""
    out = []
    for combo in sample_combos(rng, n):
        along, ortho = sample_position(rng)
        clip = np.rint(compose(motion_mask(combo.shape, combo.direction, along, ortho), combo))[:frames]
        out.append(clip)
    return torch.from_numpy(np.stack(out)).permute(0, 4, 1, 2, 3) / 127.5 - 1.0


def encode_prompts(tokenizer: PreTrainedTokenizerFast, text_encoder: torch.nn.Module, prompts: list[str],
                   device: str) -> torch.Tensor:
    """Text embeddings exactly as WanPipeline builds them: padded to max length, padding zeroed."""
    enc = tokenizer(prompts, padding="max_length", max_length=arch.MAX_SEQUENCE_LENGTH, truncation=True,
                    add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    ids, mask = enc.input_ids.to(device), enc.attention_mask.to(device)
    hidden = text_encoder(ids, mask).last_hidden_state
    return hidden * mask[..., None].to(hidden.dtype)


def _atomic_save(module: torch.nn.Module, folder: Path) -> None:
    """save_pretrained into a temp folder, then swap it in, so a reader never sees half a checkpoint."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    tmp.chmod(0o755)
    module.save_pretrained(tmp)
    old = folder.with_name(f".{folder.name}-old")
    if old.exists():
        shutil.rmtree(old)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    if old.exists():
        shutil.rmtree(old)


def _write_pipeline_skeleton(out: Path, vae_base_dim: int) -> None:
    """Write model_index.json, tokenizer, scheduler and defaults; components only where still missing."""
    mean, std = latent_stats()
    tokenizer = arch.build_tokenizer()
    torch.manual_seed(0)
    pipe = WanPipeline(
        tokenizer=tokenizer, text_encoder=arch.build_text_encoder(len(tokenizer)),
        vae=arch.build_vae(mean, std, base_dim=vae_base_dim), scheduler=arch.build_scheduler(),
        transformer=arch.build_transformer(),
    )
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-skeleton-"))
    pipe.save_pretrained(tmp, safe_serialization=True)
    for item in tmp.iterdir():
        target = out / item.name
        if item.name in {"model_index.json", "tokenizer", "scheduler"} or not target.exists():
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            item.rename(target)
    shutil.rmtree(tmp)
    (out / DEFAULTS_FILE).write_text(json.dumps(GENERATION_DEFAULTS, indent=2) + "\n")


def _lr_at(step: int, base: float, warmup: int) -> float:
    return base * min(1.0, (step + 1) / max(1, warmup))


def _out_of_time(start: float, run: RunConfig) -> bool:
    return run.max_minutes is not None and time.time() - start > run.max_minutes * 60


# ----------------------------------------------------------------- resumable checkpoints
def checkpoint_path(run: RunConfig, part: str) -> Path:
    """Where a part's full training state lives (outside the installed package)."""
    return run.checkpoint_dir / f"{part}.pt"


def _save_state(path: Path, state: dict) -> None:
    """torch.save into a temp file, then rename, so a crash never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _load_state(path: Path) -> dict:
    if not path.is_file():
        raise SystemExit(f"--resume: no checkpoint at {path}")
    return torch.load(path, map_location="cpu", weights_only=False)


def _init_from(folder: Path | None, name: str, module: torch.nn.Module) -> None:
    """Warm start one component from a saved pipeline folder (e.g. the previous release)."""
    if folder is None:
        return
    if not (folder / name / "config.json").is_file():
        raise SystemExit(f"--init: {folder / name} is not a saved component")
    source = type(module).from_pretrained(folder / name)  # resolves tied weights (UMT5's embeddings)
    module.load_state_dict(source.state_dict())


def train_dit(cfg: DitConfig, run: RunConfig, *, save: bool = True, resume: bool = False) -> list[float]:
    """Train transformer + text encoder; returns the per-step losses (all of them, across resumes).

    Deterministic for a config: every random draw comes from one numpy Generator whose state is saved
    in the checkpoint with the weights, the EMA weights, the optimiser and the step, so a resumed run
    continues exactly where an uninterrupted one would be.
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = run.device
    mean, std = latent_stats()
    mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, -1, 1, 1, 1)
    tokenizer = arch.build_tokenizer()
    text_encoder = arch.build_text_encoder(len(tokenizer)).to(device).train()
    transformer = arch.build_transformer(cfg.num_layers, cfg.heads, cfg.head_dim, cfg.ffn).to(device).train()
    _init_from(run.init, "transformer", transformer)
    _init_from(run.init, "text_encoder", text_encoder)
    ema_te = copy.deepcopy(text_encoder).eval().requires_grad_(False)
    ema_tr = copy.deepcopy(transformer).eval().requires_grad_(False)
    params = [*transformer.parameters(), *text_encoder.parameters()]
    ema_params = [*ema_tr.parameters(), *ema_te.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.99))
    losses: list[float] = []
    first = 0
    if resume:
        state = _load_state(checkpoint_path(run, "dit"))
        transformer.load_state_dict(state["transformer"])
        text_encoder.load_state_dict(state["text_encoder"])
        ema_tr.load_state_dict(state["ema_transformer"])
        ema_te.load_state_dict(state["ema_text_encoder"])
        opt.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        losses = list(state["losses"])
        first = int(state["step"])
        run.log(f"dit: resumed at step {first} from {checkpoint_path(run, 'dit')}")

    def checkpoint(done: int) -> None:
        _save_state(checkpoint_path(run, "dit"), {
            "part": "dit", "step": done, "config": asdict(cfg), "transformer": transformer.state_dict(),
            "text_encoder": text_encoder.state_dict(), "ema_transformer": ema_tr.state_dict(),
            "ema_text_encoder": ema_te.state_dict(), "optimizer": opt.state_dict(),
            "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "losses": losses})
        _atomic_save(ema_tr, run.out / "transformer")
        _atomic_save(ema_te, run.out / "text_encoder")
        _write_progress(run.out, "dit", done, losses)
        run.log(f"dit checkpoint at step {done}")

    start = last_save = time.time()
    run.log(f"dit: {sum(p.numel() for p in transformer.parameters())/1e6:.2f}M transformer, "
            f"{sum(p.numel() for p in text_encoder.parameters())/1e6:.2f}M text encoder, {cfg}")
    for step in range(first, cfg.steps):
        x0, prompts, t, noise, weight = _dit_batch(rng, cfg, mean_t, std_t, device)
        tb = t.view(-1, 1, 1, 1, 1)
        xt = (1 - tb) * x0 + tb * noise
        ctx = encode_prompts(tokenizer, text_encoder, prompts, device)
        pred = transformer(xt, t * 1000, ctx, return_dict=False)[0]
        loss = ((pred.float() - (noise - x0)).pow(2) * weight).mean()
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg.lr, cfg.warmup)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(cfg.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1 - decay)
        losses.append(float(loss.detach()))
        done = step + 1
        if done % 50 == 0:
            run.log(f"dit step {done}/{cfg.steps} loss {np.mean(losses[-50:]):.4f} "
                    f"{(time.time() - start) / (done - first):.2f}s/step elapsed {(time.time() - start) / 60:.1f} min")
        stop = _out_of_time(start, run)
        due = time.time() - last_save > run.checkpoint_minutes * 60 or done % run.checkpoint_every == 0
        if save and (due or done == cfg.steps or stop):
            checkpoint(done)
            last_save = time.time()
        if stop:
            run.log("dit: minute cap reached, stopping")
            break
    return losses


def _dit_batch(rng: np.random.Generator, cfg: DitConfig, mean_t: torch.Tensor, std_t: torch.Tensor, device: str
               ) -> tuple[torch.Tensor, list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step's (x0, prompts, t, noise, loss weight), every draw from `rng` (so a resumed run repeats it).

    Without direction_pairs this is the original recipe, draw for draw.
    """
    if not cfg.direction_pairs:
        combos = sample_combos(rng, cfg.batch)
        x0 = ((sample_latents(rng, cfg.batch, combos, cfg.along_jitter, cfg.ortho_jitter).to(device))
              - mean_t) / std_t
        prompts = [c.caption if rng.random() >= cfg.cfg_dropout else "" for c in combos]
        t = torch.sigmoid(torch.from_numpy(rng.standard_normal(cfg.batch)).float() + cfg.t_mean).to(device)
        noise = torch.from_numpy(rng.standard_normal(x0.shape)).float().to(device)
        return x0, prompts, t, noise, _object_weight(x0, cfg.fg_weight)
    half = cfg.batch // 2
    if half < 1 or cfg.batch % 2:
        raise ValueError("direction_pairs needs an even batch")
    combos = sample_combos(rng, half)
    twins = [direction_twin(rng, c) for c in combos]
    x0 = (sample_pair_latents(rng, combos, twins, cfg.along_jitter, cfg.ortho_jitter).to(device) - mean_t) / std_t
    prompts = [c.caption if rng.random() >= cfg.cfg_dropout else "" for c in combos + twins]
    t = torch.sigmoid(torch.from_numpy(rng.standard_normal(half)).float() + cfg.t_mean).repeat(2).to(device)
    noise = torch.from_numpy(rng.standard_normal((half, *x0.shape[1:]))).float().repeat(2, 1, 1, 1, 1).to(device)
    weight = _object_weight(x0, cfg.fg_weight)
    if cfg.motion_weight:
        diff = (x0[:half] - x0[half:]).abs().amax(dim=1, keepdim=True) > 0.25  # where the two tracks differ
        weight = weight + cfg.motion_weight * diff.float().repeat(2, 1, 1, 1, 1)
    return x0, prompts, t, noise, weight


def _object_weight(x0: torch.Tensor, fg_weight: float) -> torch.Tensor:
    """Per latent pixel: 1 on the background, 1 + fg_weight where the clean latent differs from its corner.

    The background is most of every frame and is learned first; without this the object's colour,
    outline and track are a few % of the loss.
    """
    if not fg_weight:
        return torch.ones_like(x0[:, :1])
    fg = ((x0 - x0[:, :, :, :1, :1]).abs().amax(dim=1, keepdim=True) > 0.25).float()
    return 1.0 + fg_weight * fg


def _vae_loss(recon: torch.Tensor, x: torch.Tensor, fg_weight: float) -> torch.Tensor:
    """L2 + L1 with the object's pixels weighted up: it is a few % of the frame but all of the caption."""
    bg = x[:, :, :, :1, :1]  # the corner is always background (objects stay centred)
    fg = ((x - bg).abs().sum(dim=1, keepdim=True) > 0.05).float()
    w = 1.0 + fg_weight * fg
    return ((recon - x).pow(2) * w).mean() + 0.5 * ((recon - x).abs() * w).mean()


def train_vae(cfg: VaeConfig, run: RunConfig, *, save: bool = True, resume: bool = False) -> list[float]:
    """Make the Wan VAE: the decoder inverts the pooled latent, the encoder produces it; resumable like the DiT.

    By default the decoder is set exactly (`arch.set_exact_decoder`) and frozen, and only the encoder
    trains (it is not used to generate; it makes the folder a complete VAE). With exact_decoder=False
    the decoder learns too, on whole clips (cfg.frames = 17 = five latent frames, so every step of its
    causal cache that the pipeline uses is trained), with the object's pixels weighted up.
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = run.device
    mean, std = latent_stats()
    vae = arch.build_vae(mean, std, base_dim=cfg.base_dim).to(device).train()
    _init_from(run.init, "vae", vae)
    if cfg.exact_decoder:  # the decoder is set, not learned: only the encoder trains
        arch.set_exact_decoder(vae)
        for module in (vae.decoder, vae.post_quant_conv):
            module.requires_grad_(False)
    trainable = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=0.0)
    losses: list[float] = []
    first = 0
    if resume:
        state = _load_state(checkpoint_path(run, "vae"))
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        losses = list(state["losses"])
        first = int(state["step"])
        run.log(f"vae: resumed at step {first}")

    def checkpoint(done: int) -> None:
        _save_state(checkpoint_path(run, "vae"), {
            "part": "vae", "step": done, "config": asdict(cfg), "vae": vae.state_dict(),
            "optimizer": opt.state_dict(), "numpy_rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(), "losses": losses})
        _atomic_save(vae.eval(), run.out / "vae")
        vae.train()
        _write_progress(run.out, "vae", done, losses)
        run.log(f"vae checkpoint at step {done}")

    start = last_save = time.time()
    std_t = torch.tensor(std, device=device).view(1, -1, 1, 1, 1)
    run.log(f"vae: {sum(p.numel() for p in vae.parameters())/1e6:.2f}M parameters, {cfg}")
    if save and first >= cfg.steps:
        checkpoint(first)
    for step in range(first, cfg.steps):
        x = sample_clips(rng, cfg.batch, cfg.enc_frames if cfg.exact_decoder else cfg.frames).to(device)
        z = arch.pooled_latent(x)
        z_in = z + cfg.latent_noise * torch.from_numpy(rng.standard_normal(z.shape)).float().to(device) * std_t
        if cfg.exact_decoder:
            dec_loss = torch.zeros((), device=device)
        else:
            recon = vae.decode(z_in).sample
            dec_loss = _vae_loss(recon, x, cfg.fg_weight)
        xe = x[:, :, : cfg.enc_frames]
        mu = vae.encode(xe).latent_dist.mean
        enc_loss = (mu - arch.pooled_latent(xe)).pow(2).mean()
        loss = dec_loss + enc_loss
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg.lr, 50) * (0.5 * (1 + math.cos(math.pi * step / cfg.steps)) * 0.9 + 0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        done = step + 1
        if done % 20 == 0:
            run.log(f"vae step {done}/{cfg.steps} dec {np.mean(losses[-20:]):.4f} enc {float(enc_loss):.4f} "
                    f"{(time.time() - start) / (done - first):.2f}s/step")
        stop = _out_of_time(start, run)
        due = time.time() - last_save > run.checkpoint_minutes * 60 or done % run.vae_checkpoint_every == 0
        if save and (due or done == cfg.steps or stop):
            checkpoint(done)
            last_save = time.time()
        if stop:
            run.log("vae: minute cap reached, stopping")
            break
    return losses


def _write_progress(out: Path, part: str, step: int, losses: list[float]) -> None:
    """Record which step each shipped component comes from (training_<part>.json, beside the weights)."""
    state = {"part": part, "step": step, "loss_last_50": round(float(np.mean(losses[-50:])), 5)}
    (out / f"training_{part}.json").write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m generator.train_default", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="pipeline folder to write")
    parser.add_argument("--part", choices=["all", "dit", "vae"], default="all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the box is shared)")
    parser.add_argument("--dit-steps", type=int, default=DitConfig.steps, help="total DiT steps (across resumes)")
    parser.add_argument("--vae-steps", type=int, default=VaeConfig.steps, help="total VAE steps (across resumes)")
    parser.add_argument("--batch", type=int, default=DitConfig.batch, help="DiT batch size")
    parser.add_argument("--vae-batch", type=int, default=VaeConfig.batch)
    parser.add_argument("--checkpoint-dir", type=Path, default=DEFAULT_CHECKPOINTS,
                        help="full training state (weights, EMA, optimiser, step, RNG) for --resume")
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0, help="save the training state this often")
    parser.add_argument("--checkpoint-every", type=int, default=500, help="and every this many DiT steps")
    parser.add_argument("--vae-checkpoint-every", type=int, default=200)
    parser.add_argument("--resume", action="store_true", help="continue each part from --checkpoint-dir")
    parser.add_argument("--init", type=Path, default=None,
                        help="warm start new runs from this pipeline folder's weights (e.g. the last release)")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop each part after this many minutes")
    parser.add_argument("--direction-pairs", action="store_true",
                        help="half of each DiT batch is the other half moving another way (same noise and t)")
    parser.add_argument("--motion-weight", type=float, default=0.0,
                        help="extra DiT loss weight where a clip and its twin differ (--direction-pairs)")
    parser.add_argument("--t-mean", type=float, default=0.0, help="location of the logit-normal DiT timestep")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    run = RunConfig(out=args.out, device=args.device, checkpoint_every=args.checkpoint_every,
                    vae_checkpoint_every=args.vae_checkpoint_every, max_minutes=args.max_minutes,
                    checkpoint_dir=args.checkpoint_dir, checkpoint_minutes=args.checkpoint_minutes, init=args.init)
    _write_pipeline_skeleton(args.out, VaeConfig.base_dim)
    for part in ("vae", "dit"):
        if args.part not in ("all", part):
            continue
        resume = args.resume and checkpoint_path(run, part).is_file()
        if resume:
            done = int(_load_state(checkpoint_path(run, part))["step"])
            total = args.vae_steps if part == "vae" else args.dit_steps
            if done >= total:
                run.log(f"{part}: checkpoint already at step {done} >= {total}, nothing to do")
                continue
        if part == "vae":
            train_vae(VaeConfig(steps=args.vae_steps, batch=args.vae_batch), run, resume=resume)
        else:
            train_dit(DitConfig(steps=args.dit_steps, batch=args.batch, direction_pairs=args.direction_pairs,
                                motion_weight=args.motion_weight, t_mean=args.t_mean), run, resume=resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
