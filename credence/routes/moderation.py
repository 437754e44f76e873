"""`POST /v1/moderations`: screen prompts with the deployment's policy, the same answer as `credence moderate`.

Each decision is recorded in the ledger (stage `screen`, the prompt's SHA-256, never the prompt),
so that an audit can count what clients asked and what the policy said.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from ..auth import Caller
from ..deps import Gate, gate, get_runtime, require_scope
from ..generation import record_decision
from ..runtime import Runtime
from .generate import Prompt
from .problems import problems

router = APIRouter(tags=["moderation"])

MAX_BATCH = 100


class ModerationBody(BaseModel):
    """One prompt (`prompt`) or up to 100 (`prompts`, answered in order under `results`): exactly one of them."""

    model_config = ConfigDict(strict=True,
                              json_schema_extra={"oneOf": [{"required": ["prompt"]}, {"required": ["prompts"]}]})

    prompt: Prompt | SkipJsonSchema[None] = Field(default=None, json_schema_extra=lambda s: s.pop("default", None))
    prompts: Annotated[list[Prompt], Field(min_length=1, max_length=MAX_BATCH)] | SkipJsonSchema[None] = Field(
        default=None, json_schema_extra=lambda s: s.pop("default", None))

    @model_validator(mode="before")
    @classmethod
    def _one_of(cls, data: Any) -> Any:
        # Before validation, so that `{"prompt": null, "prompts": [...]}` is refused like the schema says.
        if isinstance(data, dict):
            given = [k for k in ("prompt", "prompts") if k in data]
            if len(given) != 1:
                raise ValueError("give exactly one of 'prompt' or 'prompts'")
            if data[given[0]] is None:
                raise ValueError(f"'{given[0]}' must not be null")
        return data


class Reason(BaseModel):
    """Why one category was flagged."""

    model_config = ConfigDict(extra="allow")
    category: str
    score: float
    threshold: float
    action: str
    source: str


class ModerationDecision(BaseModel):
    """One decision."""

    model_config = ConfigDict(extra="allow")
    action: Literal["allow", "review", "block"]
    scores: dict[str, float]
    reasons: list[Reason]
    policy_version: str
    policy_hash: str
    user_message: str | None = None


class ModerationResults(BaseModel):
    """The decisions for `prompts`, in order."""

    results: list[ModerationDecision]


@router.post("/v1/moderations", response_model=None,
             responses={200: {"model": ModerationDecision | ModerationResults,
                              "description": "The decision (for `prompt`) or the decisions (for `prompts`)"},
                        **problems(400, 401, 403, 429, 408, 422, 503)})
async def moderate(body: ModerationBody, request: Request, caller: Caller = Depends(require_scope("moderate")),
                   runtime: Runtime = Depends(get_runtime),
                   moderation_gate: Gate = Depends(gate("moderation"))) -> dict[str, Any]:
    """`{"action", "scores", "reasons", "policy_version", ...}`, or `{"results": [...]}` for `prompts`.

    An unusable prompt (empty, over 4000 characters) is 422 with the reason; a moderator that
    cannot run is 503. Neither is ever an `allow`.
    """
    prompts = [body.prompt] if body.prompt is not None else list(body.prompts or [])

    def screen_and_record() -> list[dict[str, Any]]:
        moderator, overlay = request.app.state.moderators(caller.client_id)
        decisions = moderator.screen_prompts(prompts)
        for text, decision in zip(prompts, decisions, strict=True):
            record_decision(runtime, None, "screen", text, decision, actor=caller.actor,
                            client_id=caller.client_id, key_id=caller.key_id, overlay_hash=overlay)
        return [d.to_dict() for d in decisions]

    with moderation_gate.admit() as ticket:
        answers = await ticket.run(screen_and_record)
    return answers[0] if body.prompt is not None else {"results": answers}
