"""The generation service, one way down: options → screen and record → run → hold or publish.

`pipeline` is the flow of one generation (`generate` for the synchronous CLI, `execute` for a
row this process holds); `jobs` runs a queued generation to its end (`run_job`) and accepts new
ones (`submit`); `executors` and `queue` decide who runs the jobs; `hold` keeps what a screen
held for a person; `options` builds what a generation is asked to do, once, from the ledger row;
`protocols` names what the service needs of a moderator and a model. Nothing here imports the
HTTP routes, the review queue or the CLI: they call into it.
"""

from __future__ import annotations

from .jobs import Executor, JobBusy, find_idempotent, notify_if_final, output_path, run_job, submit
from .options import GenerateOptions, job_options, publish_request
from .pipeline import EXIT_CODES, GenerateOutcome, Progress, execute, generate, record_decision, screen_and_create
from .protocols import Decision, Model, Moderator, ModeratorFor

__all__ = ["EXIT_CODES", "Decision", "Executor", "GenerateOptions", "GenerateOutcome", "JobBusy", "Model",
           "Moderator", "ModeratorFor", "Progress", "execute", "find_idempotent", "generate", "job_options",
           "notify_if_final", "output_path", "publish_request", "record_decision", "run_job", "screen_and_create",
           "submit"]
