"""Generator: the shipped default, the generic folder path, typed errors, training and the scorer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from generator import (
    GenerationRequest,
    InvalidRequest,
    ModelLoadError,
    TextToVideoModel,
    default_model_path,
    pick_device,
    weights_hash,
)
from generator.training import default_arch as arch
from generator.training.data import HELD_OUT, TRAIN_COMBOS, VOCABULARY, Combo, all_combos, caption, render_clip
from generator.training.scorer import frame_stability, read_clip, score_clips
from generator.training.train_default import DitConfig, RunConfig, VaeConfig, checkpoint_path, train_dit, train_vae

PROMPT = "a red circle moving left on a black background"


@pytest.fixture(scope="module")
def default_model() -> TextToVideoModel:
    torch.set_num_threads(1)
    return TextToVideoModel.load(device="cpu")


# -- the shipped default ----------------------------------------------------------------------
def test_default_model_folder_is_a_small_standard_pipeline():
    folder = default_model_path()
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "WanPipeline"
    weights = list(folder.rglob("*.safetensors"))
    assert {p.parent.name for p in weights} == {"transformer", "text_encoder", "vae"}
    assert sum(p.stat().st_size for p in weights) <= 30 * 2**20


def test_default_generates_deterministically(default_model):
    steps = []
    request = GenerationRequest(PROMPT, seed=11, num_frames=5, steps=3)
    clip = default_model.generate(request, progress=lambda i, n: steps.append((i, n)))
    again = default_model.generate(request)
    other = default_model.generate(GenerationRequest(PROMPT, seed=12, num_frames=5, steps=3))
    assert clip.frames.dtype == np.uint8
    assert clip.frames.shape == (5, 256, 256, 3)
    assert np.array_equal(clip.frames, again.frames)
    assert not np.array_equal(clip.frames, other.frames)
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert clip.seed == 11 and clip.fps > 0
    assert clip.model_name == default_model.name
    assert clip.model_hash == weights_hash(default_model_path()) and len(clip.model_hash) == 64
    assert clip.parameters["native_size"] == [64, 64] and clip.parameters["steps"] == 3


def test_default_components_are_in_eval_mode(default_model):
    modules = [m for m in default_model.pipe.components.values() if isinstance(m, torch.nn.Module)]
    assert len(modules) == 3
    assert all(not m.training for m in modules)


def test_out_of_vocabulary_prompt_still_makes_a_clip(default_model):
    clip = default_model.generate(GenerationRequest("a purple zebra dancing, in the rain!", seed=1, num_frames=5,
                                                    steps=2))
    assert clip.frames.shape == (5, 256, 256, 3)


def test_default_settings_come_from_the_folder(default_model):
    settings = default_model.resolve(GenerationRequest(PROMPT, seed=3))
    assert (settings["num_frames"], settings["height"], settings["width"]) == (17, 64, 64)
    assert settings["seed"] == 3


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (GenerationRequest(PROMPT, num_frames=16), "frames=16"),
        (GenerationRequest(PROMPT, num_frames=0), "frames=0"),
        (GenerationRequest(PROMPT, num_frames=401), "frames=401"),
        (GenerationRequest(PROMPT, height=60), "height=60"),
        (GenerationRequest(PROMPT, width=4096), "width=4096"),
        (GenerationRequest(PROMPT, steps=0), "steps=0"),
        (GenerationRequest(PROMPT, guidance=float("nan")), "guidance="),
        (GenerationRequest("   "), "prompt"),
        (GenerationRequest(PROMPT, seed=-1), "seed=-1"),
    ],
)
def test_requests_the_model_cannot_do_are_typed_errors(default_model, request_, message):
    with pytest.raises(InvalidRequest, match=message):
        default_model.generate(request_)


# -- any pipeline folder ------------------------------------------------------------------------
def _tiny_wan_pipeline():
    """diffusers' own get_dummy_components() sizes for Wan, with a locally built tokenizer."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    tokenizer = arch.build_tokenizer()
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=2,
                                               num_heads=4, relative_attention_num_buckets=8, pad_token_id=0,
                                               eos_token_id=1, decoder_start_token_id=0))
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                        in_channels=16, out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32,
                                        num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                        rope_max_seq_len=32)
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), transformer=transformer)


def test_any_saved_pipeline_loads_through_the_same_path(tmp_path):
    folder = tmp_path / "tiny-wan"
    _tiny_wan_pipeline().save_pretrained(folder)
    stages = []
    model = TextToVideoModel.load(folder, device="cpu", vae_tiling=True,
                                  progress=lambda s, d, t: stages.append((d, t)))
    assert stages[0] == (0, 4) and stages[-1] == (4, 4)
    assert model.name == "tiny-wan" and model.weights_hash == weights_hash(folder)
    assert model.memory["vae_tiling"] is True
    request = GenerationRequest("a blue square moving up", seed=5, num_frames=5, height=32, width=32, steps=2)
    clip = model.generate(request)
    assert clip.frames.shape == (5, 256, 256, 3)  # 32x32 native, upscaled for watermark room
    assert clip.parameters["native_size"] == [32, 32] and clip.parameters["pipeline"] == "WanPipeline"
    assert np.array_equal(clip.frames, model.generate(request).frames)
    with pytest.raises(InvalidRequest, match="multiple of 16"):
        model.generate(GenerationRequest("x", num_frames=5, height=40, width=32, steps=1))


def test_missing_path_and_plain_folders_are_not_pipelines(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        TextToVideoModel.load(tmp_path / "nope")
    a_file = tmp_path / "weights.safetensors"
    a_file.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="not a folder"):
        TextToVideoModel.load(a_file)
    with pytest.raises(ModelLoadError, match=r"no model_index\.json"):
        TextToVideoModel.load(tmp_path)
    (tmp_path / "model_index.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        TextToVideoModel.load(tmp_path)


@pytest.mark.parametrize(
    ("class_name", "message"),
    [
        ("StableDiffusionPipeline", "not a text-to-video pipeline"),
        ("WanImageToVideoPipeline", "conditioned on image"),
        ("WanVideoToVideoPipeline", "not a text-to-video pipeline"),
        ("NoSuchVideoPipeline", "does not provide"),
    ],
)
def test_pipelines_that_are_not_text_to_video_are_refused(tmp_path, class_name, message):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    with pytest.raises(ModelLoadError, match=message):
        TextToVideoModel.load(tmp_path)


def test_a_saved_image_pipeline_is_refused(tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(4, 8), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=2)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match=r"DDPMPipeline is not a text-to-video pipeline: .*takes no prompt"):
        TextToVideoModel.load(tmp_path)


def test_a_video_pipeline_with_missing_weights_is_a_load_error(tmp_path):
    folder = tmp_path / "broken"
    _tiny_wan_pipeline().save_pretrained(folder)
    for weights in (folder / "transformer").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ModelLoadError, match="could not load the pipeline"):
        TextToVideoModel.load(folder, device="cpu")


def test_devices_and_dtypes_are_checked():
    assert pick_device("cpu") == "cpu"
    assert pick_device() in {"cuda", "mps", "cpu"}
    with pytest.raises(ModelLoadError, match="unknown device 'tpu'"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="'cuda' is not available"):
            pick_device("cuda")
    with pytest.raises(ModelLoadError, match="unknown dtype 'float8'"):
        TextToVideoModel.load(device="cpu", dtype="float8")


# -- training -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_dit_training_loss_is_finite_and_falls():
    torch.set_num_threads(1)
    cfg = DitConfig(steps=40, batch=8, lr=2e-3, warmup=5, num_layers=1, heads=2, head_dim=24, ffn=64, seed=3)
    losses = train_dit(cfg, RunConfig(log=lambda msg: None), save=False)
    assert len(losses) == 40 and np.isfinite(losses).all()
    assert np.mean(losses[-8:]) < 0.8 * np.mean(losses[:8])


@pytest.mark.slow
def test_vae_training_loss_falls(tmp_path):
    torch.set_num_threads(1)
    cfg = VaeConfig(steps=12, batch=1, lr=3e-3, frames=5, base_dim=8, seed=2)
    losses = train_vae(cfg, RunConfig(out=tmp_path, log=lambda msg: None), save=False)
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def _tiny_dit(steps: int) -> DitConfig:
    return DitConfig(steps=steps, batch=4, lr=2e-3, warmup=2, num_layers=1, heads=2, head_dim=16, ffn=32, seed=5)


@pytest.mark.slow
def test_dit_training_resumes_exactly_from_its_checkpoint(tmp_path):
    """Stopped after 3 steps and resumed to 6 == 6 steps straight: weights, EMA, optimiser and RNG."""
    torch.set_num_threads(1)
    quiet = {"log": lambda msg: None, "checkpoint_every": 3}
    straight = RunConfig(out=tmp_path / "a", checkpoint_dir=tmp_path / "ck-a", **quiet)
    split = RunConfig(out=tmp_path / "b", checkpoint_dir=tmp_path / "ck-b", **quiet)
    losses = train_dit(_tiny_dit(6), straight)
    first = train_dit(_tiny_dit(3), split)
    resumed = train_dit(_tiny_dit(6), split, resume=True)
    assert first == losses[:3] and resumed == losses  # every loss the same, bit for bit
    a = torch.load(checkpoint_path(straight, "dit"), weights_only=False)
    b = torch.load(checkpoint_path(split, "dit"), weights_only=False)
    assert a["step"] == b["step"] == 6
    for key in ("transformer", "ema_transformer", "text_encoder", "ema_text_encoder"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert a["numpy_rng"] == b["numpy_rng"]
    # the exported EMA weights form a loadable folder beside the checkpoint
    assert (split.out / "transformer" / "config.json").is_file()
    assert json.loads((split.out / "training_dit.json").read_text())["step"] == 6


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    run = RunConfig(out=tmp_path, checkpoint_dir=tmp_path / "none", log=lambda msg: None)
    with pytest.raises(SystemExit, match="no checkpoint"):
        train_dit(_tiny_dit(2), run, resume=True)


def test_pooled_latent_is_what_the_vae_config_promises():
    clip = torch.from_numpy(render_clip(Combo("red", "square", "right", "gray"), 0)).permute(3, 0, 1, 2)[None]
    x = clip.float() / 127.5 - 1
    z = arch.pooled_latent(x)
    assert z.shape == (1, arch.Z_DIM, 5, 16, 16)
    restored = arch.unpool_latent(z)
    assert restored.shape == x.shape
    # the same frame in a latent's four slots for frame 0; mean colours kept exactly
    assert torch.allclose(z[:, :3, 0], z[:, 3:6, 0])
    assert torch.allclose(restored.mean(dim=(3, 4)), x.mean(dim=(3, 4)), atol=1e-5)


@pytest.mark.slow
def test_exact_decoder_inverts_the_pooled_latent():
    """The shipped VAE's decoder is set, not learned: unstack + nearest 4x, to well under a grey level."""
    vae = arch.set_exact_decoder(arch.build_vae([0.0] * arch.Z_DIM, [1.0] * arch.Z_DIM)).eval()
    clip = torch.from_numpy(render_clip(Combo("magenta", "triangle", "up", "white"), 4)).permute(3, 0, 1, 2)[None]
    z = arch.pooled_latent(clip.float() / 127.5 - 1)
    noisy = z + 0.3 * torch.randn(z.shape, generator=torch.Generator().manual_seed(0))  # as a sampler leaves it
    with torch.no_grad():
        for latent in (z, noisy):
            out = vae.decode(latent).sample
            assert out.shape == (1, 3, 17, 64, 64)
            assert (out - arch.unpool_latent(latent).clamp(-1, 1)).abs().max() < 1e-3
    frames = ((out[0] + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 3, 0).numpy()
    assert read_clip(frames).background == "white"


# -- data and scorer ------------------------------------------------------------------------------
def test_held_out_combinations_are_never_trained_on():
    combos = all_combos()
    assert len(combos) == 6 * 3 * 4 * 4 - 2 * 12  # object colour never equals the background
    assert set(HELD_OUT).isdisjoint(TRAIN_COMBOS) and len(HELD_OUT) + len(TRAIN_COMBOS) == len(combos)
    assert 0.08 <= len(HELD_OUT) / len(combos) <= 0.12
    for attr in ("colour", "shape", "direction", "background"):  # every value still seen in training
        assert {getattr(c, attr) for c in TRAIN_COMBOS} == {getattr(c, attr) for c in combos}
    assert caption(Combo("red", "circle", "left", "black")) == PROMPT


def test_tokenizer_maps_unknown_words_to_unk():
    tok = arch.build_tokenizer()
    ids = tok("A Purple circle moving left on a GREY background")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["a", "<unk>", "circle", "moving", "left", "on", "a", "gray",
                                              "background", "</s>"]
    assert set(VOCABULARY) <= set(tok.get_vocab())


def test_scorer_reads_real_clips_perfectly_and_catches_mismatches():
    rng = np.random.default_rng(0)
    clips = [(render_clip(c, rng), c) for c in all_combos()[::3]]
    assert score_clips(clips) == {"colour": 1.0, "background": 1.0, "direction": 1.0, "shape": 1.0, "all": 1.0}
    frames, combo = clips[0]
    big = np.repeat(np.repeat(frames, 4, axis=1), 4, axis=2)  # as delivered at 256x256
    assert read_clip(big).matches(combo)["all"]
    wrong = Combo(combo.colour, combo.shape, "up" if combo.direction != "up" else "down", combo.background)
    assert read_clip(frames).matches(wrong) == {"colour": True, "background": True, "direction": False,
                                                "shape": True, "all": False}
    blank = np.full((17, 64, 64, 3), 128, np.uint8)
    reading = read_clip(blank)
    assert reading.background == "gray" and reading.colour is None and reading.direction is None


def test_stability_check_catches_a_colour_change_and_a_collapsed_last_frame():
    frames = render_clip(Combo("red", "circle", "right", "black"), 1)
    assert frame_stability(frames) == {"one_colour": True, "last_frame_object": True}
    turned = frames.copy()
    red = (turned[10:] == np.array([230, 30, 30], np.uint8)).all(axis=-1)
    turned[10:][red] = (240, 220, 40)  # the object turns yellow from frame 10 on
    assert not frame_stability(turned)["one_colour"]
    collapsed = frames.copy()
    collapsed[-1] = 10  # the last frame is only background
    assert frame_stability(collapsed) == {"one_colour": True, "last_frame_object": False}
