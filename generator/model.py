"""Load any diffusers text-to-video pipeline from a local folder and generate clips with it.

The shipped default and an operator's Wan / CogVideoX / LTX / HunyuanVideo folder go through the same
path: `DiffusionPipeline.from_pretrained(folder, local_files_only=True)`. A folder may carry
`credence_defaults.json` (the default model does) with its native frames, size, steps, guidance, fps
and size limits; other folders fall back to the pipeline's own `__call__` defaults.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from generator.errors import GenerationFailed, InvalidRequest, ModelLoadError
from generator.limits import DEFAULTS_FILE, LIMITS, default_model_path, frame_step, size_multiple

MIN_DELIVER_SIZE = 256  # watermark and fingerprints need room: smaller clips are upscaled to this short side
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")
# Inputs that make a pipeline image- or video-conditioned rather than text-to-video.
CONDITIONING_INPUTS = ("image", "video", "control_video", "conditions", "pose_video", "reference_images", "latents_in")
NOT_T2V_NAME_PARTS = ("ImageToVideo", "Image2Video", "VideoToVideo", "Video2Video", "Control", "Inpaint",
                      "Upsample", "Decode", "Refine", "Modular")
FRAME_PARAMETERS = ("num_frames", "video_length", "frames")
# Frame rates the families were trained at, for clips whose folder does not say.
FAMILY_FPS = {"Wan": 16.0, "CogVideoX": 8.0, "LTX": 24.0, "HunyuanVideo": 24.0, "Mochi": 30.0, "Allegro": 15.0,
              "Latte": 8.0, "SanaVideo": 16.0, "SkyReels": 24.0, "TextToVideoSD": 8.0, "AnimateDiff": 8.0}


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate; None means the model's default."""

    prompt: str
    seed: int | None = None
    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    steps: int | None = None
    guidance: float | None = None


@dataclass
class Clip:
    """A generated clip with what is needed to record it: frames are T x H x W x 3 uint8."""

    frames: np.ndarray
    fps: float
    model_name: str
    model_hash: str
    seed: int
    parameters: dict[str, Any] = field(default_factory=dict)


def pick_device(preferred: str | None = None) -> str:
    """CUDA, then MPS, then CPU; a preferred device that is not available is an error, not a fallback."""
    import torch

    if preferred:
        kind = preferred.split(":")[0]
        available = {
            "cpu": True,
            "cuda": torch.cuda.is_available(),
            "mps": bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available(),
        }
        if kind not in available:
            raise ModelLoadError(f"unknown device {preferred!r} (use cuda, cuda:N, mps or cpu)")
        if not available[kind]:
            raise ModelLoadError(f"device {preferred!r} is not available on this machine")
        return preferred
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _pick_dtype(dtype: str | None, device: str) -> Any:
    """float32 on the CPU (diffusers' own default); bfloat16 on GPUs that have it, else float16."""
    import torch

    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype is not None:
        key = str(dtype).removeprefix("torch.").lower()
        if key not in names:
            raise ModelLoadError(f"unknown dtype {dtype!r} (use float32, float16 or bfloat16)")
        return names[key]
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.startswith("mps"):
        return torch.float16
    return torch.float32


def weights_hash(folder: Path) -> str:
    """sha256 over every weight file in the folder (relative path and bytes, in sorted order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _read_index(folder: Path) -> dict[str, Any]:
    if not folder.exists():
        raise ModelLoadError(f"model folder {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise ModelLoadError(f"model path {str(folder)!r} is not a folder")
    index = folder / "model_index.json"
    if not index.is_file():
        raise ModelLoadError(f"{str(folder)!r} is not a diffusers pipeline folder (no model_index.json)")
    try:
        data = json.loads(index.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{str(index)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("_class_name"), str):
        raise ModelLoadError(f"{str(index)!r} names no pipeline class (_class_name)")
    return data


def _frames_parameter(pipeline_cls: type) -> str | None:
    params = inspect.signature(pipeline_cls.__call__).parameters
    return next((p for p in FRAME_PARAMETERS if p in params), None)


def check_text_to_video(class_name: str) -> type:
    """The diffusers pipeline class, if it is text-to-video: it takes a prompt and a frame count, and
    needs no image or video to condition on. Raises ModelLoadError otherwise."""
    import diffusers

    cls = getattr(diffusers, class_name, None)
    if not isinstance(cls, type) or not callable(cls):
        raise ModelLoadError(f"model_index.json names {class_name!r}, which diffusers {diffusers.__version__} "
                             "does not provide")
    params = inspect.signature(cls.__call__).parameters
    required = [n for n, p in params.items() if n != "self" and p.default is inspect.Parameter.empty
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    reasons = []
    if any(part in class_name for part in NOT_T2V_NAME_PARTS):
        reasons.append("its name marks another task")
    if "prompt" not in params:
        reasons.append("it takes no prompt")
    if _frames_parameter(cls) is None:
        reasons.append("it takes no frame count (an image pipeline?)")
    conditioning = [n for n in CONDITIONING_INPUTS if n in params]
    if conditioning:
        reasons.append(f"it is conditioned on {', '.join(conditioning)}")
    if set(required) - {"prompt"}:
        reasons.append(f"it requires {', '.join(sorted(set(required) - {'prompt'}))}")
    if reasons:
        raise ModelLoadError(f"{class_name} is not a text-to-video pipeline: {'; '.join(reasons)}")
    return cls


def _family_fps(class_name: str) -> float:
    return next((fps for family, fps in FAMILY_FPS.items() if class_name.startswith(family)), 8.0)


class TextToVideoModel:
    """One loaded pipeline, ready to generate. Build it with `TextToVideoModel.load`."""

    def __init__(self, pipe: Any, *, folder: Path, name: str, weights_hash: str, device: str, dtype: Any,
                 defaults: dict[str, Any], memory: dict[str, bool]) -> None:
        self.pipe = pipe
        self.folder = folder
        self.name = name
        self.weights_hash = weights_hash
        self.device = device
        self.dtype = dtype
        self.defaults = defaults
        self.memory = memory
        self.class_name = type(pipe).__name__
        call = inspect.signature(type(pipe).__call__).parameters
        self._call_params = call
        self._frames_param = _frames_parameter(type(pipe))
        self._lock = threading.Lock()  # schedulers keep per-call state; one generation at a time per model

    # ----------------------------------------------------------------- loading
    @classmethod
    def load(cls, folder: Path | str | None = None, *, device: str | None = None, dtype: str | None = None,
             cpu_offload: bool = False, vae_tiling: bool = False, vae_slicing: bool = False,
             progress: Callable[[str, int, int], None] | None = None) -> TextToVideoModel:
        """Load a text-to-video pipeline folder (None: the shipped default) onto a device.

        cpu_offload keeps components on the CPU and moves each to the GPU while it runs (big models on
        small GPUs); vae_tiling / vae_slicing lower the VAE's peak memory where the VAE supports them.
        """
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        report = progress or (lambda stage, done, total: None)
        stages = 4
        folder = Path(folder) if folder is not None else default_model_path()
        report("reading model_index.json", 0, stages)
        index = _read_index(folder)
        check_text_to_video(index["_class_name"])
        device = pick_device(device)
        torch_dtype = _pick_dtype(dtype, device)
        defaults = _read_defaults(folder)

        report("loading components", 1, stages)
        import torch
        from diffusers import DiffusionPipeline
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        verbosity = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()
        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()
        try:
            pipe = DiffusionPipeline.from_pretrained(folder, dtype=torch_dtype, local_files_only=True)
        except (OSError, ValueError, TypeError, KeyError, RuntimeError, ImportError) as exc:
            raise ModelLoadError(f"could not load the pipeline in {str(folder)!r}: {_one_line(exc)}") from exc
        finally:
            diffusers_logging.set_verbosity(verbosity)
            diffusers_logging.enable_progress_bar()
            transformers_logging.enable_progress_bar()

        report("placing on device", 2, stages)
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                component.eval().requires_grad_(False)
        memory = {"cpu_offload": False, "vae_tiling": False, "vae_slicing": False}
        if cpu_offload and device != "cpu":
            pipe.enable_model_cpu_offload(device=device)
            memory["cpu_offload"] = True
        else:
            pipe.to(device)
        vae = getattr(pipe, "vae", None)
        for wanted, key, method in ((vae_tiling, "vae_tiling", "enable_tiling"),
                                    (vae_slicing, "vae_slicing", "enable_slicing")):
            if wanted and vae is not None:
                try:
                    getattr(vae, method)()
                    memory[key] = True
                except (AttributeError, NotImplementedError):
                    pass  # this VAE cannot; the option is recorded as off
        pipe.set_progress_bar_config(disable=True)

        report("hashing weights", 3, stages)
        digest = weights_hash(folder)
        report("ready", stages, stages)
        name = str(defaults.get("name") or folder.name)
        return cls(pipe, folder=folder, name=name, weights_hash=digest, device=device, dtype=torch_dtype,
                   defaults=defaults, memory=memory)

    # ----------------------------------------------------------------- generation
    def resolve(self, request: GenerationRequest) -> dict[str, Any]:
        """The request's effective settings, checked against what the model can do (raises InvalidRequest)."""
        if not isinstance(request.prompt, str) or not request.prompt.strip():
            raise InvalidRequest("prompt must be a non-empty string")
        limits = {**LIMITS, **{k: v for k, v in self.defaults.items() if k in LIMITS}}
        sig_default = {n: p.default for n, p in self._call_params.items()
                       if p.default is not inspect.Parameter.empty}
        frames = _first(request.num_frames, self.defaults.get("num_frames"), sig_default.get(self._frames_param))
        height = _first(request.height, self.defaults.get("height"), sig_default.get("height"))
        width = _first(request.width, self.defaults.get("width"), sig_default.get("width"))
        steps = _first(request.steps, self.defaults.get("num_inference_steps"), sig_default.get("num_inference_steps"))
        guidance = _first(request.guidance, self.defaults.get("guidance_scale"), sig_default.get("guidance_scale"))
        seed = request.seed if request.seed is not None else secrets.randbits(31)

        if frames is not None:
            _check_int("frames", frames, limits["min_frames"], limits["max_frames"])
            step = frame_step(self.class_name, getattr(self.pipe, "vae_scale_factor_temporal", None))
            if (frames - 1) % step:
                raise InvalidRequest(f"frames={frames}: this model needs {step}k+1 frames "
                                     f"(e.g. {(frames - 1) // step * step + 1} or "
                                     f"{((frames - 1) // step + 1) * step + 1})")
        multiple = self._size_multiple()
        for label, value in (("height", height), ("width", width)):
            if value is not None:
                _check_int(label, value, limits["min_size"], limits["max_size"])
                if value % multiple:
                    raise InvalidRequest(f"{label}={value}: this model needs a multiple of {multiple}")
        if steps is not None:
            _check_int("steps", steps, 1, limits["max_steps"])
        if guidance is not None and (not isinstance(guidance, int | float) or not math.isfinite(guidance)
                                     or guidance < 0 or guidance > 50):
            raise InvalidRequest(f"guidance={guidance!r}: must be a number between 0 and 50")
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
            raise InvalidRequest(f"seed={seed!r}: must be an integer in [0, 2**63)")
        return {"prompt": request.prompt, "num_frames": frames, "height": height, "width": width,
                "steps": steps, "guidance": guidance, "seed": seed}

    def _size_multiple(self) -> int:
        spatial = getattr(self.pipe, "vae_scale_factor_spatial", None) or getattr(self.pipe, "vae_scale_factor", 8)
        patch = 1
        transformer = getattr(self.pipe, "transformer", None)
        cfg_patch = getattr(getattr(transformer, "config", None), "patch_size", None)
        if isinstance(cfg_patch, int):
            patch = cfg_patch
        elif isinstance(cfg_patch, list | tuple) and cfg_patch:
            patch = int(cfg_patch[-1])
        return size_multiple(self.class_name, int(spatial), patch)

    def generate(self, request: GenerationRequest, *,
                 progress: Callable[[int, int], None] | None = None) -> Clip:
        """Generate one clip. Same seed, same request, same device: the same frames."""
        import torch

        settings = self.resolve(request)
        kwargs: dict[str, Any] = {"prompt": settings["prompt"], "output_type": "np",
                                  "generator": torch.Generator("cpu").manual_seed(settings["seed"])}
        if settings["num_frames"] is not None and self._frames_param:
            kwargs[self._frames_param] = settings["num_frames"]
        for key, arg in (("height", "height"), ("width", "width"), ("steps", "num_inference_steps"),
                         ("guidance", "guidance_scale")):
            if settings[key] is not None and arg in self._call_params:
                kwargs[arg] = settings[key]
        if "max_sequence_length" in self.defaults and "max_sequence_length" in self._call_params:
            kwargs["max_sequence_length"] = self.defaults["max_sequence_length"]
        total = settings["steps"] or 0
        if progress is not None and "callback_on_step_end" in self._call_params:
            def on_step_end(pipe: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
                progress(step + 1, total or step + 1)
                return callback_kwargs

            kwargs["callback_on_step_end"] = on_step_end

        with self._lock:
            try:
                with torch.inference_mode():
                    result = self.pipe(**kwargs)
            except torch.OutOfMemoryError as exc:
                raise GenerationFailed(f"out of memory on {self.device}: {_one_line(exc)} "
                                       "(try fewer frames, a smaller size, cpu_offload or vae_tiling)") from exc
            except ValueError as exc:
                # diffusers checks its inputs with ValueError: that is a request the model cannot do.
                raise InvalidRequest(f"{self.class_name} rejected the request: {_one_line(exc)}") from exc
            except RuntimeError as exc:
                if "out of memory" in str(exc).lower():
                    raise GenerationFailed(f"out of memory on {self.device}: {_one_line(exc)}") from exc
                raise GenerationFailed(f"{self.class_name} failed: {_one_line(exc)}") from exc
        native = _to_uint8_video(result.frames[0] if hasattr(result, "frames") else result[0])
        if not np.isfinite(native).all():
            raise GenerationFailed("the model produced non-finite frames")
        if progress is not None and "callback_on_step_end" not in self._call_params and total:
            progress(total, total)
        deliver = int(self.defaults.get("deliver_size", MIN_DELIVER_SIZE))
        frames = upscale_to(native, max(deliver, MIN_DELIVER_SIZE))
        parameters = {
            **settings,
            "pipeline": self.class_name,
            "scheduler": type(getattr(self.pipe, "scheduler", None)).__name__,
            "device": self.device,
            "dtype": str(self.dtype).removeprefix("torch."),
            "native_size": [int(native.shape[1]), int(native.shape[2])],
            "delivered_size": [int(frames.shape[1]), int(frames.shape[2])],
            "num_frames": int(frames.shape[0]),
            "memory": dict(self.memory),
        }
        if "max_sequence_length" in kwargs:
            parameters["max_sequence_length"] = kwargs["max_sequence_length"]
        return Clip(frames=frames, fps=float(self.defaults.get("fps") or _family_fps(self.class_name)),
                    model_name=self.name, model_hash=self.weights_hash, seed=settings["seed"],
                    parameters=parameters)


def _read_defaults(folder: Path) -> dict[str, Any]:
    path = folder / DEFAULTS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{str(path)!r} must hold a JSON object")
    return data


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _check_int(label: str, value: Any, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(f"{label}={value!r}: must be an integer")
    if not low <= value <= high:
        raise InvalidRequest(f"{label}={value}: this model accepts {low} to {high}")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _to_uint8_video(video: Any) -> np.ndarray:
    """Pipeline output (np float 0..1, tensor or a list of PIL images) as T x H x W x 3 uint8."""
    if isinstance(video, list | tuple):
        video = np.stack([np.asarray(frame) for frame in video])
    if hasattr(video, "detach"):
        video = video.detach().float().cpu().numpy()
    arr = np.asarray(video)
    if arr.ndim != 4:
        raise GenerationFailed(f"pipeline returned frames of shape {arr.shape}, not T x H x W x C")
    if arr.shape[-1] not in (1, 3, 4) and arr.shape[1] in (1, 3, 4):
        arr = arr.transpose(0, 2, 3, 1)
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(np.nan_to_num(arr.astype(np.float32), nan=0.0) * 255.0), 0, 255).astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return np.ascontiguousarray(arr[..., :3])


def upscale_to(frames: np.ndarray, short_side: int) -> np.ndarray:
    """Bicubic upscale so the short side is at least `short_side` (aspect kept); larger clips pass through."""
    _, h, w, _ = frames.shape
    if min(h, w) >= short_side:
        return frames
    import torch

    scale = short_side / min(h, w)
    size = (round(h * scale), round(w * scale))
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    y = torch.nn.functional.interpolate(x, size=size, mode="bicubic", align_corners=False)
    return np.ascontiguousarray(y.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
