"""What a text-to-video model folder accepts (frames, size, steps), read from its JSON files only.

One place for the families' shape rules: `size_multiple` and `frame_step` are what the loaded
model checks a request against (`TextToVideoModel.resolve`), and `ModelLimits.from_folder` states
the same rules before any weight is loaded (no torch: an API states them in its schema at start).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The file a model folder may carry with its native settings and limits (the shipped default does).
DEFAULTS_FILE = "credence_defaults.json"
#: What any folder accepts unless its `credence_defaults.json` says otherwise.
LIMITS = {"min_frames": 1, "max_frames": 1024, "min_size": 16, "max_size": 4096, "max_steps": 1000}


def default_model_path() -> Path:
    """The default model folder shipped inside the package."""
    return Path(__file__).resolve().parent / "default_model"


def size_multiple(class_name: str, spatial: int, patch: int) -> int:
    """Height and width must be multiples of this: the VAE's spatial factor times the patch size
    (Wan also needs 16, `WanPipeline.check_inputs`)."""
    multiple = spatial * patch
    if class_name.startswith("Wan"):
        multiple = math.lcm(multiple, 16)
    return multiple


def frame_step(class_name: str, temporal: int | None) -> int:
    """Frames must be `frame_step * k + 1` (Wan: the VAE's temporal factor); 1 means any count."""
    return temporal if class_name.startswith("Wan") and temporal else 1


@dataclass(frozen=True)
class ModelLimits:
    """What a model accepts, as the generator checks it (`TextToVideoModel.resolve`)."""

    min_frames: int
    max_frames: int
    frame_step: int  # frames must be frame_step*k + 1 (Wan: the VAE's temporal factor); 1: any count
    min_size: int
    max_size: int
    size_multiple: int
    max_steps: int

    def frame_counts(self) -> list[int]:
        """Every frame count the model accepts, when they are few enough to list."""
        return [n for n in range(self.min_frames, self.max_frames + 1) if (n - 1) % self.frame_step == 0]

    @classmethod
    def from_folder(cls, folder: Path | None, *, max_steps: int | None = None) -> ModelLimits:
        """The limits of the model in `folder` (the shipped default when None), from its JSON files
        (`credence_defaults.json`, `model_index.json`, the VAE and transformer configs); `LIMITS` for
        whatever the folder does not say. `max_steps` caps the steps further. Never imports torch."""
        folder = folder or default_model_path()
        defaults = _read_json(folder / DEFAULTS_FILE)
        limits = {**LIMITS, **{k: v for k, v in defaults.items() if k in LIMITS and isinstance(v, int)}}
        class_name = str(_read_json(folder / "model_index.json").get("_class_name", ""))
        vae = _read_json(folder / "vae" / "config.json")
        transformer = _read_json(folder / "transformer" / "config.json")
        # The same factors diffusers' pipelines read (vae_scale_factor_spatial/temporal, patch size).
        spatial = vae.get("scale_factor_spatial")
        if not isinstance(spatial, int):
            blocks = vae.get("block_out_channels")
            spatial = 2 ** (len(blocks) - 1) if isinstance(blocks, list) and blocks else 8
        patch = transformer.get("patch_size", 1)
        if isinstance(patch, list | tuple):
            patch = patch[-1] if patch else 1
        multiple = size_multiple(class_name, spatial, patch if isinstance(patch, int) and patch > 0 else 1)
        temporal = vae.get("scale_factor_temporal", 4)
        step = frame_step(class_name, temporal if isinstance(temporal, int) and temporal > 0 else 4)
        min_frames = limits["min_frames"]
        if step > 1:  # the first count of the form k*step+1 inside the limits
            min_frames = min_frames + (-(min_frames - 1)) % step
        min_size = limits["min_size"] + (-limits["min_size"]) % multiple
        steps = limits["max_steps"] if max_steps is None else min(max_steps, limits["max_steps"])
        return cls(min_frames=min_frames, max_frames=limits["max_frames"], frame_step=step, min_size=min_size,
                   max_size=limits["max_size"], size_multiple=multiple, max_steps=max(1, steps))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
