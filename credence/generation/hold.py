"""Holding a generation for a person: the quarantine of held outputs and what the client is told.

Below both the generation flow (which holds an output its screen sent to review) and the review
queue (which publishes or deletes what was held), so that neither needs the other.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from provenance.quarantine import Quarantine

if TYPE_CHECKING:
    import numpy as np

    from ..runtime import Runtime

#: What the client reads when its video (not its prompt) was held or withheld.
HELD_OUTPUT_MESSAGES = {
    "review": "The generated video was held for review before release; you will be told the outcome.",
    "blocked": "The generated video was withheld because it did not meet the content policy.",
}
HELD_PROMPT_MESSAGE = "Your request was held for review by a person before anything is generated."


def held_output_message(status: str) -> str:
    """The client-facing sentence for an output held (`review`) or withheld (`blocked`)."""
    return HELD_OUTPUT_MESSAGES[status]


def quarantine_for(runtime: Runtime) -> Quarantine:
    """The deployment's quarantine folder (under CREDENCE_HOME) and how long it keeps a held output."""
    settings = runtime.settings
    return Quarantine(settings.home / "quarantine", dt.timedelta(hours=settings.quarantine_hours))


def quarantine_output(runtime: Runtime, generation_id: str, frames: np.ndarray, fps: float) -> None:
    """Keep exactly the frames a reviewer will see (before the row says `review`)."""
    quarantine_for(runtime).save(generation_id, frames, fps)
