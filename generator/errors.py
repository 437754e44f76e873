"""Typed generator errors: each names the bad value in one line, so the CLI and API can show it as is."""


class GeneratorError(Exception):
    """Base class for everything the generator raises on purpose."""


class ModelLoadError(GeneratorError):
    """The folder is missing, is not a diffusers pipeline, is not text-to-video, or will not load."""


class InvalidRequest(GeneratorError):
    """The request asks for something this model cannot do (frames, size, steps, an empty prompt)."""


class GenerationFailed(GeneratorError):
    """The model was asked something valid but failed while running (out of memory, a numerical error)."""
