"""The review queue over HTTP, for keys with the `review` scope.

`GET /v1/reviews` lists held generations (oldest first), `GET /v1/reviews/{id}` shows one,
`POST /v1/reviews/{id}/approve` and `/reject` decide with a note. A held prompt that is approved
is queued on the app's job executor; a held output is published in the request.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from ..auth import Caller
from ..deps import get_runtime, require_scope
from ..errors import scrub
from ..generation.executors import executor_for
from ..review import Reviewer, ReviewError, ReviewNotFound, ReviewRefused, approve, list_held, reject, show
from ..reviewers import ApprovalForbidden
from ..runtime import Runtime
from .problems import problems

router = APIRouter(tags=["review"])


class ReviewNote(BaseModel):
    """Why the reviewer decided so: recorded with the decision, never shown to the client."""

    note: str = Field(min_length=1, max_length=2000)


class ReviewPage(BaseModel):
    """Held generations and the id to pass as `after` for the next page (None on the last)."""

    items: list[dict[str, Any]]
    next: str | None


class ReviewOutcomeModel(BaseModel):
    """What the decision did."""

    id: str
    action: Literal["approve", "reject"]
    status: str
    detail: str


def _http(exc: ReviewError) -> HTTPException:
    if isinstance(exc, ReviewNotFound):
        return HTTPException(404, str(exc))
    return HTTPException(409, str(exc))


@router.get("/v1/reviews", response_model=ReviewPage, responses=problems(401, 403, 422, 503))
def list_reviews(stage: Literal["prompt", "output"] | None = None, category: str | None = Query(None, max_length=64),
                 limit: int = Query(100, ge=1, le=1000), after: str | None = Query(None, max_length=64),
                 _caller: Caller = Depends(require_scope("review")),
                 runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """Generations held for review, oldest first, with the reasons and the approvals so far."""
    items = list_held(runtime, stage=stage, category=category, limit=limit, after=after)
    return {"items": items, "next": items[-1]["id"] if len(items) == limit else None}


@router.get("/v1/reviews/{generation_id}", responses=problems(401, 403, 404, 503))
def get_review(generation_id: str, _caller: Caller = Depends(require_scope("review")),
               runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """One generation as a reviewer sees it: prompt, reasons, decisions, audit trail (no server path)."""
    try:
        item = show(runtime, generation_id)
    except ReviewError as exc:
        raise _http(exc) from None
    return without_server_paths(item, runtime.settings)


#: Keys whose values are where the server keeps files (the published clip, its temporary file).
_PATH_KEYS = frozenset({"path", "output_path", "temp_path"})


def _scrubbed(value: Any, settings: Any) -> Any:
    if isinstance(value, dict):
        return {k: _scrubbed(v, settings) for k, v in value.items() if k not in _PATH_KEYS}
    if isinstance(value, list):
        return [_scrubbed(v, settings) for v in value]
    if isinstance(value, str):
        return scrub(value, settings)
    return value


def without_server_paths(item: dict[str, Any], settings: Any) -> dict[str, Any]:
    """`item` as an API client may see it: files and audit entries without the server's paths.

    The console's own pages show the record whole (they are the operator's); over the API the
    file's hash, size and manifest label identify it, and where it lies is the server's business.
    Free text the server wrote (audit details, failure reasons) is scrubbed like error details;
    the prompt and the decisions' reasons are the client's and the policy's words, left as they are.
    """
    out = dict(item)
    for key in ("files", "audit", "failure_reason"):
        if key in out:
            out[key] = _scrubbed(out[key], settings)
    return out


@router.post("/v1/reviews/{generation_id}/approve", response_model=ReviewOutcomeModel,
             responses=problems(401, 403, 404, 409, 422, 503))
def approve_review(generation_id: str, body: ReviewNote, request: Request,
                   caller: Caller = Depends(require_scope("review")),
                   runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """Approve: a held prompt's job is queued; a held output is published as it was made.

    403 when the key names no reviewer (`keys create --reviewer NAME`) or its client made the
    request (a client never approves its own held request, whatever its scopes). 409 when it is
    not held, when the policy never allows approving its category, or when the same person (or
    key) approves twice where two reviewers are needed.
    """
    try:
        return approve(runtime, generation_id, Reviewer.from_caller(caller), body.note,
                       enqueue=executor_for(request.app).enqueue).to_dict()
    except ApprovalForbidden as exc:
        raise HTTPException(403, str(exc)) from None
    except (ReviewRefused, ReviewError) as exc:
        raise _http(exc) from None


@router.post("/v1/reviews/{generation_id}/reject", response_model=ReviewOutcomeModel,
             responses=problems(401, 403, 404, 409, 422, 503))
def reject_review(generation_id: str, body: ReviewNote, caller: Caller = Depends(require_scope("review")),
                  runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """Reject: the generation ends `rejected`; its held output is deleted.

    Any `review` key may reject, its own client's request included: that only withdraws it.
    """
    try:
        return reject(runtime, generation_id, Reviewer.from_caller(caller), body.note).to_dict()
    except ReviewError as exc:
        raise _http(exc) from None
