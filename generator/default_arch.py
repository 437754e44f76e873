"""The default model's architecture: a tiny, standard diffusers `WanPipeline` built from config.

Nothing here is custom at inference: the folder it saves holds a `WanTransformer3DModel`, an
`AutoencoderKLWan`, a `UMT5EncoderModel`, a word-level `PreTrainedTokenizerFast` and a
`FlowMatchEulerDiscreteScheduler`, and `DiffusionPipeline.from_pretrained` runs it like any Wan model.

What makes it cheap to train is the latent. Instead of learning a compressive VAE first, the latent
is fixed by construction: each latent frame is the 4x4 average-pooled clip with four consecutive
frames stacked on the channel axis (the first latent frame repeats frame 0, as Wan's causal VAE
does). 17 frames at 64x64 become a 12 x 5 x 16 x 16 latent, so the transformer sees 320 tokens
(2x2 latent patches, 8x8 pixels x 4 frames each) and its targets are exact. The VAE's decoder is
trained to invert that pooling (a small learned 4x super-resolution), and its encoder to produce it.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from generator.data import VOCABULARY

SPATIAL = 4
TEMPORAL = 4
Z_DIM = 3 * TEMPORAL
TEXT_DIM = 64
MAX_SEQUENCE_LENGTH = 16  # prompts are ~10 words; the pipeline pads text embeddings to this length
SPECIAL = ("<pad>", "</s>", "<unk>")


def build_tokenizer(words: tuple[str, ...] = VOCABULARY) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer; any word outside the vocabulary becomes <unk>."""
    vocab = {tok: i for i, tok in enumerate((*SPECIAL, *words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Lowercase(), normalizers.Replace(Regex(r"\bgrey\b"), "gray")]
    )
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        model_max_length=MAX_SEQUENCE_LENGTH,
    )


def build_text_encoder(vocab_size: int) -> UMT5EncoderModel:
    """A 2-layer UMT5 encoder, 64 wide: enough to tell ~20 words and their order apart."""
    config = UMT5Config(
        vocab_size=vocab_size, d_model=TEXT_DIM, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
        feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        tie_word_embeddings=False,
    )
    return UMT5EncoderModel(config)


def build_transformer(num_layers: int = 6, heads: int = 4, head_dim: int = 32, ffn: int = 512) -> WanTransformer3DModel:
    """A Wan DiT with d = 128 over 2x2 latent patches (48 values per token < d)."""
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim, in_channels=Z_DIM,
        out_channels=Z_DIM, text_dim=TEXT_DIM, freq_dim=128, ffn_dim=ffn, num_layers=num_layers,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=256,
    )


def build_vae(latents_mean: list[float], latents_std: list[float], base_dim: int = 24) -> AutoencoderKLWan:
    """A small Wan VAE with 4x spatial and 4x temporal compression and a 12-channel latent."""
    return AutoencoderKLWan(
        base_dim=base_dim, z_dim=Z_DIM, dim_mult=[1, 2, 2], num_res_blocks=1, attn_scales=[],
        temperal_downsample=[True, True], latents_mean=latents_mean, latents_std=latents_std,
        scale_factor_temporal=TEMPORAL, scale_factor_spatial=SPATIAL,
    )


def build_scheduler(shift: float = 2.0) -> FlowMatchEulerDiscreteScheduler:
    """Rectified-flow Euler sampling; the shift spends more steps at high noise, where layout forms."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)


def pooled_latent(video: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The fixed latent of a batch of clips.

    video: B x 3 x T x H x W in [-1, 1] with T = 4k+1. Returns B x 12 x (k+1) x H/4 x W/4: frame 0
    repeated four times, then each group of four frames stacked on channels (frame-major, then RGB).
    """
    x = torch.as_tensor(video, dtype=torch.float32)
    b, c, t, h, w = x.shape
    if (t - 1) % TEMPORAL:
        raise ValueError(f"frames must be 4k+1, got {t}")
    pooled = torch.nn.functional.avg_pool3d(x, kernel_size=(1, SPATIAL, SPATIAL))
    first = pooled[:, :, :1].repeat(1, TEMPORAL, 1, 1, 1)  # B x 12 x 1 x h x w (frame-major: rgb,rgb,...)
    rest = pooled[:, :, 1:]  # B x 3 x 4k x h x w
    k = (t - 1) // TEMPORAL
    rest = rest.reshape(b, c, k, TEMPORAL, h // SPATIAL, w // SPATIAL).permute(0, 3, 1, 2, 4, 5)
    rest = rest.reshape(b, TEMPORAL * c, k, h // SPATIAL, w // SPATIAL)
    return torch.cat([first, rest], dim=2)


def unpool_latent(latent: torch.Tensor) -> torch.Tensor:
    """The inverse of `pooled_latent` up to the pooling (nearest upsampling); used to check it."""
    b, _, k1, h, w = latent.shape
    first = latent[:, :3, :1]
    rest = latent[:, :, 1:].reshape(b, TEMPORAL, 3, k1 - 1, h, w).permute(0, 2, 3, 1, 4, 5)
    rest = rest.reshape(b, 3, (k1 - 1) * TEMPORAL, h, w)
    x = torch.cat([first, rest], dim=2)
    return x.repeat_interleave(SPATIAL, dim=3).repeat_interleave(SPATIAL, dim=4)
