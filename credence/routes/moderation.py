"""`POST /v1/moderations`: screen prompts with the deployment's policy, the same answer as `credence moderate`.

Each decision is recorded in the ledger (stage `screen`, the prompt's SHA-256, never the prompt),
so that an audit can count what clients asked and what the policy said.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, model_validator

from ..deps import get_moderator, get_runtime, require_api_key
from ..pipeline import record_decision
from ..runtime import Runtime

router = APIRouter(tags=["moderation"])

MAX_BATCH = 100


class ModerationBody(BaseModel):
    """One prompt (`prompt`) or up to 100 (`prompts`, answered in order under `results`)."""

    prompt: str | None = Field(default=None, max_length=200_000)
    prompts: list[str] | None = Field(default=None, min_length=1, max_length=MAX_BATCH)

    @model_validator(mode="after")
    def _one_of(self) -> ModerationBody:
        if (self.prompt is None) == (self.prompts is None):
            raise ValueError("give exactly one of 'prompt' or 'prompts'")
        return self


@router.post("/v1/moderations")
async def moderate(body: ModerationBody, request: Request, runtime: Runtime = Depends(get_runtime),
                   client: str = Depends(require_api_key)) -> dict[str, Any]:
    """`{"action", "scores", "reasons", "policy_version", ...}`, or `{"results": [...]}` for `prompts`.

    An unusable prompt (empty, over 4000 characters) is 422 with the reason; a moderator that
    cannot run is 503. Neither is ever an `allow`.
    """
    moderator = await run_in_threadpool(get_moderator, request)
    prompts = [body.prompt] if body.prompt is not None else list(body.prompts or [])
    decisions = await run_in_threadpool(moderator.screen_prompts, prompts)

    def record() -> None:
        for text, decision in zip(prompts, decisions, strict=True):
            record_decision(runtime, None, "screen", text, decision, actor=client)

    await run_in_threadpool(record)
    answers = [d.to_dict() for d in decisions]
    return answers[0] if body.prompt is not None else {"results": answers}
