"""What the generation service needs of a moderator and of a text-to-video model.

`moderation.Moderator` and `generator.TextToVideoModel` are what run in production; the
protocols name the handful of calls the service makes, so a test (or another backend) can stand
in for either without the service knowing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

    from generator import Clip, GenerationRequest


class Decision(Protocol):
    """A screen's answer: `allow`, `review` or `block`, and the policy that decided it."""

    @property
    def action(self) -> str: ...

    @property
    def policy_version(self) -> str: ...

    @property
    def policy_label(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


class Moderator(Protocol):
    """Screens a prompt before any model runs and the frames before anything is published."""

    def screen_prompt(self, prompt: str) -> Decision: ...

    def screen_frames(self, frames: np.ndarray) -> Decision: ...


class Model(Protocol):
    """A loaded text-to-video model: one request in, one clip (frames and what made them) out."""

    def generate(self, request: GenerationRequest, *,
                 progress: Callable[[int, int], None] | None = None) -> Clip: ...


#: A client's moderator and the hash of its policy overlay (None without one), by client id.
ModeratorFor = Callable[[str | None], tuple[Moderator, str | None]]
