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

from generator.training.data import VOCABULARY

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


EXACT_OFFSET = 16.0  # carried on value channels so the head's SiLU is linear (SiLU(x) = x to 1e-5 for x > 14)
EXACT_CONST = 1.0e4  # one constant channel that dominates the head's RMS norm, so the norm is a fixed scale


def set_exact_decoder(vae: AutoencoderKLWan) -> AutoencoderKLWan:
    """Set the Wan decoder's weights so that it inverts `pooled_latent` exactly: unstack the four frames
    from the channels and upsample 4x by nearest neighbour. No training, no approximation worth a grey level.

    The latent is fixed by construction, so its decoder can be too. A learned decoder lost the
    object's colour (0.38 of clips read right on exact latents, `python -m generator.training.diagnose`) and
    collapsed on latent frames it had not been trained on; this one reads 1.0 colour, background and
    direction on exact latents. How: every residual branch and the attention output are zero (the
    blocks are identities); the convolutions route channels (the causal ones through their current
    time tap only, so the cache does not matter); the temporal upsamplers send frame pairs, then
    frames, to their time steps; the spatial ones are nearest upsampling with a centre tap. The head
    is the only non-linear part: a constant channel of EXACT_CONST makes its RMS norm a fixed scale
    (gamma undoes it) and an offset of EXACT_OFFSET keeps the SiLU in its linear range; conv_out
    removes the offset. Needs base_dim >= 13 (12 value channels and the constant).
    """
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm

    dec = vae.decoder
    c_hi = dec.conv_in.out_channels  # wide stages (dims[0])
    const_hi = Z_DIM  # index of the constant channel in the wide stages
    with torch.no_grad():
        for p in (*dec.parameters(), *vae.post_quant_conv.parameters()):
            p.zero_()
        for m in dec.modules():
            if isinstance(m, WanRMS_norm):
                m.gamma.fill_(1.0)
        eye = torch.arange(Z_DIM)
        vae.post_quant_conv.weight[eye, eye, 0, 0, 0] = 1.0
        dec.conv_in.weight[eye, eye, -1, 1, 1] = 1.0  # current time tap, spatial centre
        dec.conv_in.bias[:Z_DIM] = EXACT_OFFSET
        dec.conv_in.bias[const_hi] = EXACT_CONST
        per_frame = 3
        values = Z_DIM  # value channels still stacked at this stage: 12, then 6, then 3
        for block in dec.up_blocks:
            for resnet in block.resnets:
                if not isinstance(resnet.conv_shortcut, torch.nn.Identity):
                    w = resnet.conv_shortcut.weight  # low -> wide: values at 0.., constant 6 -> 12
                    w[torch.arange(values), torch.arange(values), 0, 0, 0] = 1.0
                    w[const_hi, values, 0, 0, 0] = 1.0
            if block.upsamplers is None:
                continue
            up = block.upsamplers[0]
            half = values // 2
            k = torch.arange(half)
            w = up.time_conv.weight  # (2 * c_hi) x c_hi x 3 x 1 x 1: first c_hi outputs = earlier frame
            w[k, k, -1, 0, 0] = 1.0
            w[c_hi + k, half + k, -1, 0, 0] = 1.0
            w[const_hi, const_hi, -1, 0, 0] = 1.0
            w[c_hi + const_hi, const_hi, -1, 0, 0] = 1.0
            conv = up.resample[1]  # after nearest-exact 2x: keep the (now) first half, constant at `half`
            conv.weight[k, k, 1, 1] = 1.0
            conv.weight[half, const_hi, 1, 1] = 1.0
            values = half
        assert values == per_frame, "the decoder must have two temporal upsamplers"
        out_dim = dec.norm_out.gamma.shape[0]
        dec.norm_out.gamma.zero_()
        dec.norm_out.gamma[:per_frame] = EXACT_CONST / out_dim**0.5
        rgb = torch.arange(per_frame)
        dec.conv_out.weight[rgb, rgb, -1, 1, 1] = 1.0
        dec.conv_out.bias[:] = -EXACT_OFFSET
    return vae


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
