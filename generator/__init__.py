"""Credence generator: any diffusers text-to-video pipeline from a local folder, and the shipped default.

    model = TextToVideoModel.load()          # the default model in generator/default_model
    clip = model.generate(GenerationRequest("a red circle moving left on a black background", seed=1))
"""

from generator.errors import GenerationFailed, GeneratorError, InvalidRequest, ModelLoadError
from generator.model import (
    Clip,
    GenerationRequest,
    TextToVideoModel,
    default_model_path,
    pick_device,
    weights_hash,
)

__all__ = [
    "Clip",
    "GenerationFailed",
    "GenerationRequest",
    "GeneratorError",
    "InvalidRequest",
    "ModelLoadError",
    "TextToVideoModel",
    "default_model_path",
    "pick_device",
    "weights_hash",
]
