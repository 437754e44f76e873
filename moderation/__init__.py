"""Credence moderation: policy-driven screening of prompts before the GPU runs, and of frames after.

`Moderator.load(load_policy())` once per process; `screen_prompt(text)` and `screen_frames(frames)`
return a `Decision`. Every error is a `ModerationError`: no decision means no generation.
"""

from .errors import InvalidPrompt, ModelMissing, ModerationError, ModerationUnavailable, PolicyError
from .moderator import MAX_PROMPT_CHARS, Decision, Moderator, Reason
from .normalize import normalize
from .policy import Policy, load_policy, parse_policy

__all__ = ["MAX_PROMPT_CHARS", "Decision", "InvalidPrompt", "ModelMissing", "ModerationError",
           "ModerationUnavailable", "Moderator", "Policy", "PolicyError", "Reason", "load_policy", "normalize",
           "parse_policy"]
