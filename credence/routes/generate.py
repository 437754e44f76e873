"""`POST /v1/generations`: the compliant generation API, and the record of each generation.

The request body's limits are the configured model's, read from its folder when the app is built
(`generator.limits.ModelLimits.from_folder`: JSON files only, no torch, no weights), so that the
OpenAPI document states exactly what the model accepts and a request it would refuse is a 422
before any work starts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, create_model
from sqlalchemy import and_, or_, select

from generator.limits import ModelLimits
from moderation import MAX_PROMPT_CHARS
from provenance.ledger import FINAL_STATUSES, GENERATION_STATUSES, Generation, ModerationDecision, StateConflict, states

from ..audit import SearchError, decode_cursor, encode_cursor
from ..auth import Caller
from ..deps import Gate, gate, get_runtime, require_scope, visible_to
from ..generation import Decision, GenerateOptions, find_idempotent, notify_if_final, submit
from ..generation.executors import executor_for
from ..generation.jobs import check_replay
from ..runtime import Runtime
from ..timestamps import iso
from .problems import PROBLEM_MEDIA_TYPE, problems

#: Steps a client may ask for, whatever the model allows: the cost grows linearly with them.
MAX_STEPS = 100

#: Seeds a JSON number carries exactly everywhere (I-JSON, RFC 7493); larger ones round in many parsers.
MAX_SEED = 2**53 - 1

#: A prompt needs one letter or digit: whitespace, punctuation or control characters alone are empty.
PROMPT_PATTERN = r"\w"


def _check_prompt(prompt: str) -> str:
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"the prompt is {len(prompt)} characters long; the limit is {MAX_PROMPT_CHARS}")
    if not re.search(PROMPT_PATTERN, prompt):
        raise ValueError("the prompt is empty (it needs at least one letter or digit)")
    return prompt


#: A prompt as both the moderator and the generator accept it; the schema states the same rule.
Prompt = Annotated[str, AfterValidator(_check_prompt),
                   WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_PROMPT_CHARS,
                                   "pattern": PROMPT_PATTERN,
                                   "description": f"1 to {MAX_PROMPT_CHARS} characters, at least one a letter "
                                                  "or digit."})]


def _json_integer(value: Any) -> Any:
    """A JSON integer as JSON Schema means it (48 and 48.0 alike), never a string or a boolean."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("must be an integer")
    return int(value)


def json_int(**constraints: Any) -> Any:
    """An integer field type whose validation matches its JSON schema (`Field` constraints apply)."""
    return Annotated[int, Field(**constraints), BeforeValidator(_json_integer)]


def _iso_only(value: Any) -> Any:
    """Pydantic also reads a bare number as a Unix time; the schema says `date-time` (RFC 3339), so refuse it."""
    if isinstance(value, int | float) or (isinstance(value, str) and re.fullmatch(r"\s*[+-]?[\d.eE+-]+\s*", value)):
        raise ValueError("must be an ISO 8601 date-time, such as 2026-01-31T12:00:00Z")
    return value


#: A date-time parameter that accepts exactly what its schema (`format: date-time`) says.
IsoDateTime = Annotated[dt.datetime, BeforeValidator(_iso_only)]


def read_model_limits(folder: Path | None) -> ModelLimits:
    """The configured model's limits (`ModelLimits.from_folder`), with the steps a client may ask for capped."""
    return ModelLimits.from_folder(folder, max_steps=MAX_STEPS)


def generation_body(limits: ModelLimits) -> type[BaseModel]:
    """The request body for these limits: the OpenAPI document states them, validation enforces them."""
    counts = limits.frame_counts()
    if limits.frame_step > 1 and 0 < len(counts) <= 256:
        def one_of_counts(frames: int) -> int:
            if frames not in counts:
                raise ValueError(f"this model takes {limits.frame_step}k+1 frames from {counts[0]} to {counts[-1]}")
            return frames

        frames_type: Any = Annotated[int, BeforeValidator(_json_integer), AfterValidator(one_of_counts),
                                     WithJsonSchema({"type": "integer", "enum": counts})]
        frames_doc = (f"Frames: {limits.frame_step}k+1 from {counts[0]} to {counts[-1]} "
                      "(the model's default when absent).")
    else:
        frames_type = json_int(ge=limits.min_frames, le=limits.max_frames)
        frames_doc = f"Frames, {limits.min_frames} to {limits.max_frames} (the model's default when absent)."
    size = json_int(ge=limits.min_size, le=limits.max_size, multiple_of=limits.size_multiple,
                    description=f"Pixels: a multiple of {limits.size_multiple} from {limits.min_size} "
                                f"to {limits.max_size} (the model's default when absent).")
    return create_model(
        "GenerationBody",
        __config__=ConfigDict(extra="ignore"),
        __doc__="A generation request. Frames, size and steps default to the model's own.",
        prompt=(Prompt, ...),
        seed=(json_int(ge=0, le=MAX_SEED) | None, Field(default=None,
                                description="Seed (random when absent); at most 2^53-1, the largest integer "
                                            "every JSON parser keeps exactly (RFC 7493).")),
        frames=(frames_type | None, Field(default=None, description=frames_doc)),
        height=(size | None, None),
        width=(size | None, None),
        steps=(json_int(ge=1, le=limits.max_steps) | None, Field(default=None,
                                 description=f"Denoising steps, 1 to {limits.max_steps}.")),
    )


class JobAccepted(BaseModel):
    """A generation job: queued (or held for review), to be polled at `Location`."""

    model_config = ConfigDict(extra="allow")
    id: str
    status: Literal["queued", "review", "running", "published", "blocked", "rejected", "failed", "cancelled"]
    moderation: dict[str, Any] | None = None


class GenerationRecord(BaseModel):
    """A job's record: status, stage and progress, timings, moderation, and once published its clip."""

    model_config = ConfigDict(extra="allow")
    id: str
    status: str
    stage: str | None
    progress: float
    created_at: str
    started_at: str | None
    finished_at: str | None
    queue_wait_s: float | None


class GenerationPage(BaseModel):
    """One page of the caller's generations, newest first; `next_cursor` fetches the next page."""

    items: list[GenerationRecord]
    next_cursor: str | None


#: How far along a job is, by status and stage (a rough guide for progress bars).
PROGRESS = {("running", "generating"): 0.2, ("running", "screening"): 0.7, ("running", "publishing"): 0.8,
            ("running", "releasing"): 0.95}


def record_of(gen: Generation, decisions: list[ModerationDecision] | None = None) -> dict[str, Any]:
    """The client's view of a generation (no server path, no other client's data)."""
    final = gen.status in FINAL_STATUSES
    created, started = gen.created_at, gen.started_at
    wait = (started - created).total_seconds() if started is not None and created is not None else None
    record: dict[str, Any] = {
        "id": gen.id, "status": gen.status, "stage": gen.stage,
        "progress": 1.0 if final else PROGRESS.get((gen.status, gen.stage or ""), 0.0),
        "created_at": iso(created), "started_at": iso(started), "finished_at": iso(gen.finished_at),
        "queue_wait_s": round(wait, 3) if wait is not None else None, "attempts": gen.attempts,
        "model": gen.model, "seed": gen.seed, "policy_version": gen.policy_version, "client_id": gen.client_id,
    }
    if gen.status == "failed":
        record["failure_reason"] = "the generation failed on the server" if gen.failure_reason else None
    for decision in decisions or []:
        entry = {"action": decision.action, "policy_version": decision.policy_version}
        reasons = [r.get("category") for r in decision.reasons or [] if isinstance(r, dict)]
        entry["categories"] = sorted({r for r in reasons if r})
        record.setdefault("moderation", {})[decision.stage] = entry
    if gen.status in ("blocked", "review", "rejected"):
        record["message"] = _user_message(gen)
    if gen.status == "published":
        record["video_url"] = f"/v1/generations/{gen.id}/video"
        record["mark_id"] = gen.mark_hex
        labels = [f.manifest_label for f in gen.files if f.manifest_label]
        record["manifest_label"] = labels[-1] if labels else None
        record["files"] = [{"sha256": f.sha256, "size_bytes": f.size_bytes, "mime_type": f.mime_type,
                            "manifest_label": f.manifest_label} for f in gen.files]
    return record


def _user_message(gen: Generation) -> str:
    if gen.status == "review":
        return ("the generated video was held for review" if gen.stage == "output"
                else "your request was held for review")
    if gen.status == "rejected":  # credence.review writes a user-facing reason (never the reviewer's note)
        return gen.failure_reason or "a reviewer rejected this generation"
    return ("the generated video was blocked by the moderation policy" if gen.stage == "output"
            else "your request was blocked by the moderation policy")


def _owned(runtime: Runtime, caller: Caller, generation_id: str) -> Generation:
    """The generation if the caller may see it; 404 otherwise (no existence oracle)."""
    gen = runtime.ledger.get_generation(generation_id)
    if gen is None or not visible_to(caller, gen.client_id):
        raise HTTPException(404, f"no generation {generation_id[:100]!r}")
    return gen


def _cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        return decode_cursor(cursor)
    except SearchError:
        # A cursor names a page: one this API never gave out names no page (404, not a malformed request:
        # the schema's pattern already refuses what is not a cursor's shape).
        raise HTTPException(404, "no page at this cursor (not a cursor this API gave out)") from None


def make_router(limits: ModelLimits) -> APIRouter:
    """The generation routes, with a request body built for the configured model's limits."""
    router = APIRouter(tags=["generation"])
    body_model = generation_body(limits)

    async def create_generation(body: BaseModel, request: Request,
                                caller: Caller = Depends(require_scope("generate")),
                                runtime: Runtime = Depends(get_runtime),
                                idempotency_key: str | None = Header(default=None, alias="Idempotency-Key",
                                                                     max_length=200),
                                generation_gate: Gate = Depends(gate("generation"))) -> JSONResponse:
        """Screen the prompt now and queue the job: 202 `{"id", "status": "queued"}` with a `Location`.

        A held prompt is 202 with status `review`; a blocked one is a 422 problem with the user-facing
        reason, the recorded `id` and `generation_status: "blocked"` (both recorded). The same
        `Idempotency-Key` with the same body returns the same job; with another body it is 409. 429
        past the client's request or daily generation quota.
        """
        # What the key names: the validated request (key order, spacing and defaults do not matter).
        request_sha256 = hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True,
                                                   separators=(",", ":")).encode()).hexdigest()
        options = GenerateOptions.for_deployment(runtime.settings, seed=body.seed, frames=body.frames,
                                                 steps=body.steps, height=body.height, width=body.width,
                                                 client=caller.client_name, client_id=caller.client_id,
                                                 key_id=caller.key_id)

        def run() -> tuple[Generation, Decision | None, str, bool]:
            if idempotency_key is not None:
                existing = find_idempotent(runtime, caller.client_id, idempotency_key)
                if existing is not None:
                    check_replay(existing, request_sha256)
                    return existing, None, existing.status, False
            retry_after = request.app.state.quotas.generation(caller)
            if retry_after is not None:
                raise HTTPException(429, f"daily generation quota ({caller.daily_generations}) reached",
                                    headers={"Retry-After": str(retry_after)})
            moderator, overlay = request.app.state.moderators(caller.client_id)
            options.overlay_hash = overlay
            return submit(runtime, moderator, body.prompt, options, executor_for(request.app),
                          idempotency_key=idempotency_key, request_sha256=request_sha256)

        with generation_gate.admit() as ticket:
            gen, decision, status, _created = await ticket.run(run)
        answer: dict[str, Any] = {"id": gen.id, "status": status}
        if decision is not None:
            answer["moderation"] = {k: v for k, v in decision.to_dict().items() if k != "reasons"}
        headers = {"Location": f"/v1/generations/{gen.id}"}
        if status == "blocked":
            message = (decision.to_dict().get("user_message") if decision is not None else None) \
                or "your request was blocked by the moderation policy"
            # RFC 9457: `status` is the HTTP status; the generation's own status has its own field.
            problem = {"type": "about:blank#blocked", "title": "Blocked by the moderation policy", "status": 422,
                       "detail": message, "errors": [], "id": gen.id, "generation_status": status,
                       **{k: v for k, v in answer.items() if k not in ("id", "status")}}
            return JSONResponse(problem, 422, headers=headers, media_type=PROBLEM_MEDIA_TYPE)
        return JSONResponse(answer, 202, headers=headers)

    # The body's type is built above, at run time: FastAPI reads it from the annotation.
    create_generation.__annotations__["body"] = body_model
    router.post("/v1/generations", response_model=None, status_code=202,
                responses={202: {"model": JobAccepted, "description": "Queued (or held for review); poll Location",
                                 "headers": {"Location": {"schema": {"type": "string"}}}},
                           **problems(400, 401, 403, 408, 429, 503,
                                      s409="The Idempotency-Key was already used with a different request body",
                                      s422="Invalid request, or the prompt was blocked by the moderation policy "
                                           "(`detail` is the user-facing reason, `id` the recorded generation)")},
                )(create_generation)

    @router.get("/v1/generations", response_model=None,
                responses={200: {"model": GenerationPage, "description": "The caller's generations, newest first"},
                           **problems(401, 403, 404, 422, 429, 503)})
    def list_generations(caller: Caller = Depends(require_scope("generate")), runtime: Runtime = Depends(get_runtime),
                         status: str | None = Query(default=None, pattern="^(" + "|".join(GENERATION_STATUSES) + ")$"),
                         since: IsoDateTime | None = Query(default=None, description="Created at or after (ISO 8601)."),
                         limit: int = Query(default=50, ge=1, le=200),
                         cursor: str | None = Query(default=None, max_length=400, pattern=r"^[A-Za-z0-9_\-]+={0,2}$",
                                                    description="`next_cursor` of the previous page.")
                         ) -> dict[str, Any]:
        """The caller's own generations (all of them with the `audit` scope), newest first, paginated."""
        query = select(Generation).order_by(Generation.created_at.desc(), Generation.id.desc()).limit(limit + 1)
        if not (caller.can("audit") or caller.operator):
            query = query.where(Generation.client_id == caller.client_id)
        if status is not None:
            query = query.where(Generation.status == status)
        if since is not None:
            query = query.where(Generation.created_at >= (since if since.tzinfo else since.replace(tzinfo=dt.UTC)))
        if cursor is not None:
            moment, last_id = _cursor(cursor)
            query = query.where(or_(Generation.created_at < moment,
                                    and_(Generation.created_at == moment, Generation.id < last_id)))
        with runtime.ledger.session() as s:
            rows = s.scalars(query).all()
            items = [record_of(g) for g in rows[:limit]]
            next_cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
        return {"items": items, "next_cursor": next_cursor}

    @router.get("/v1/generations/{generation_id}", response_model=None,
                responses={200: {"model": GenerationRecord, "description": "The record"},
                           **problems(401, 403, 404, 429, 503)})
    def get_generation(generation_id: str, caller: Caller = Depends(require_scope("generate")),
                       runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
        """One job: status, stage and progress, timings, moderation outcome; when published, the clip's URL,
        mark id and manifest label. Another client's id is 404."""
        gen = _owned(runtime, caller, generation_id)
        return record_of(gen, gen.decisions)

    @router.delete("/v1/generations/{generation_id}", response_model=None,
                   responses={200: {"model": GenerationRecord, "description": "Cancelled"},
                              **problems(401, 403, 404, 429, 503,
                                         s409="The job is no longer queued (running or finished): it cannot be "
                                              "cancelled")})
    def cancel_generation(generation_id: str, caller: Caller = Depends(require_scope("generate")),
                          runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
        """Cancel a queued job (a worker that later receives it does nothing)."""
        _owned(runtime, caller, generation_id)
        with runtime.ledger.session() as s:
            try:
                states.move(s, generation_id, ("queued",), "cancelled")
            except StateConflict as exc:
                raise HTTPException(409, str(exc)) from None
            runtime.ledger.audit(s, caller.actor, "generation.cancelled", generation_id, client_id=caller.client_id,
                                 key_id=caller.key_id)
        notify_if_final(runtime, generation_id)
        return record_of(_owned(runtime, caller, generation_id))

    @router.get("/v1/generations/{generation_id}/video", response_model=None, response_class=FileResponse,
                responses={200: {"description": "The published clip, byte for byte as signed",
                                 "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}},
                           **problems(401, 403, 404, 410, 429, 503)})
    def get_video(generation_id: str, caller: Caller = Depends(require_scope("generate")),
                  runtime: Runtime = Depends(get_runtime)) -> FileResponse:
        """The published clip, byte for byte as signed (only ever a published one; only its client's)."""
        gen = _owned(runtime, caller, generation_id)
        if gen.status != "published" or not gen.files:
            raise HTTPException(404, f"no published clip for generation {generation_id[:100]!r}")
        path = Path(gen.files[-1].path)
        if not path.is_file():
            raise HTTPException(410, "the published file is no longer on this server")
        return FileResponse(path, media_type=gen.files[-1].mime_type, filename=f"{gen.id}.mp4")

    return router
