"""`POST /v1/generations`: the compliant generation API, and the record of each generation.

The request body's limits are the configured model's, read from its folder when the app is built
(JSON files only: no torch, no weights), so that the OpenAPI document states exactly what the
model accepts and a request it would refuse is a 422 before any work starts.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, create_model

from moderation import MAX_PROMPT_CHARS

from .. import pipeline
from ..deps import Gate, gate, get_moderator, get_runtime, require_api_key
from ..runtime import Runtime
from .problems import problems

# One generation at a time per process, whatever the app: the model holds the accelerator.
_generate_lock = threading.Lock()

STATUS_CODES = {"published": 201, "review": 202, "blocked": 403}

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


@dataclass(frozen=True)
class ModelLimits:
    """What the configured model accepts, as the generator checks it (`TextToVideoModel.resolve`)."""

    min_frames: int
    max_frames: int
    frame_step: int  # frames must be frame_step*k + 1 (Wan: the VAE's temporal factor); 1: any count
    min_size: int
    max_size: int
    size_multiple: int
    max_steps: int

    def frame_counts(self) -> list[int]:
        """Every frame count the model accepts, when they are few enough to list."""
        return [n for n in range(self.min_frames, self.max_frames + 1) if (n - 1) % self.frame_step == 0]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_model_limits(folder: Path | None) -> ModelLimits:
    """The model's limits from its folder's JSON files (`credence_defaults.json`, `model_index.json`
    and the VAE and transformer configs); `generator.model.LIMITS` for whatever a folder does not say.
    Never imports torch or reads weights: it runs when the app is built."""
    from generator.model import DEFAULTS_FILE, LIMITS, default_model_path

    folder = folder or default_model_path()
    defaults = _read_json(folder / DEFAULTS_FILE)
    limits = {**LIMITS, **{k: v for k, v in defaults.items() if k in LIMITS and isinstance(v, int)}}
    class_name = str(_read_json(folder / "model_index.json").get("_class_name", ""))
    vae = _read_json(folder / "vae" / "config.json")
    transformer = _read_json(folder / "transformer" / "config.json")
    # The same factors diffusers' pipelines read (vae_scale_factor_spatial/temporal, patch size).
    spatial = vae.get("scale_factor_spatial")
    if not isinstance(spatial, int):
        blocks = vae.get("block_out_channels")
        spatial = 2 ** (len(blocks) - 1) if isinstance(blocks, list) and blocks else 8
    patch = transformer.get("patch_size", 1)
    if isinstance(patch, list | tuple):
        patch = patch[-1] if patch else 1
    multiple = spatial * (patch if isinstance(patch, int) and patch > 0 else 1)
    frame_step = 1
    if class_name.startswith("Wan"):
        multiple = math.lcm(multiple, 16)  # WanPipeline.check_inputs
        temporal = vae.get("scale_factor_temporal", 4)
        frame_step = temporal if isinstance(temporal, int) and temporal > 0 else 4
    min_frames = limits["min_frames"]
    if frame_step > 1:  # the first count of the form k*step+1 inside the limits
        min_frames = min_frames + (-(min_frames - 1)) % frame_step
    min_size = limits["min_size"] + (-limits["min_size"]) % multiple
    return ModelLimits(min_frames=min_frames, max_frames=limits["max_frames"], frame_step=frame_step,
                       min_size=min_size, max_size=limits["max_size"], size_multiple=multiple,
                       max_steps=max(1, min(MAX_STEPS, limits["max_steps"])))


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


class GenerationOutcome(BaseModel):
    """What happened to the request: published (201), held for review (202) or blocked (403)."""

    model_config = ConfigDict(extra="allow")
    status: Literal["published", "review", "blocked"]
    generation_id: str
    moderation: dict[str, Any]
    video_url: str | None = Field(default=None, description="Where the published clip is (published only).")


class GenerationRecord(BaseModel):
    """The ledger's record of one generation."""

    model_config = ConfigDict(extra="allow")
    generation_id: str
    status: str
    model: str | None
    model_hash: str | None
    seed: int | None
    policy_version: str | None
    created_at: str
    failure_reason: str | None
    files: list[dict[str, Any]]


def make_router(limits: ModelLimits) -> APIRouter:
    """The generation routes, with a request body built for the configured model's limits."""
    router = APIRouter(tags=["generation"])
    body_model = generation_body(limits)

    async def create_generation(body: BaseModel, request: Request,
                                client: str = Depends(require_api_key), runtime: Runtime = Depends(get_runtime),
                                generation_gate: Gate = Depends(gate("generation"))) -> JSONResponse:
        """Moderate, generate, watermark, sign and record: 201 published, 202 held for review, 403 blocked.

        503 with `Retry-After` while another generation runs and the queue is full, or when one runs
        past CREDENCE_GENERATION_TIMEOUT (it still finishes and is recorded).
        """
        settings = runtime.settings
        outputs = settings.outputs_dir
        output = outputs / f"api-{dt.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(4)}.mp4"
        options = pipeline.GenerateOptions(model=settings.default_model, seed=body.seed, frames=body.frames,
                                           steps=body.steps, height=body.height, width=body.width, client=client,
                                           device=settings.device, dtype=settings.dtype,
                                           cpu_offload=settings.cpu_offload, vae_tiling=settings.vae_tiling)

        def run() -> pipeline.GenerateOutcome:
            # Loaded here, after the body validated: a malformed request must not pay for the model.
            moderator = get_moderator(request)
            outputs.mkdir(parents=True, exist_ok=True)
            with _generate_lock:
                return pipeline.generate(runtime, moderator, body.prompt, output, options)

        with generation_gate.admit() as ticket:
            outcome = await ticket.run(run)
        result = outcome.to_dict()
        if result.get("path"):
            result["video_url"] = f"/v1/generations/{outcome.generation_id}/video"
        result.pop("path", None)  # server paths are not the client's business
        return JSONResponse(result, STATUS_CODES[outcome.status])

    # The body's type is built above, at run time: FastAPI reads it from the annotation.
    create_generation.__annotations__["body"] = body_model
    router.post("/v1/generations", response_model=None, status_code=201,
                responses={201: {"model": GenerationOutcome, "description": "Published"},
                           202: {"model": GenerationOutcome, "description": "Held for review"},
                           403: {"model": GenerationOutcome, "description": "Blocked by the moderation policy"},
                           **problems(400, 401, 408, 422, 503)})(create_generation)

    @router.get("/v1/generations/{generation_id}", response_model=None,
                responses={200: {"model": GenerationRecord, "description": "The record"},
                           **problems(401, 404, 503)})
    def get_generation(generation_id: str, _client: str = Depends(require_api_key),
                       runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
        """The record of one generation: status, model, policy, and its published file."""
        gen = runtime.ledger.get_generation(generation_id)
        if gen is None:
            raise HTTPException(404, f"no generation {generation_id[:100]!r}")
        files = [{"sha256": f.sha256, "size_bytes": f.size_bytes, "manifest_label": f.manifest_label,
                  "mime_type": f.mime_type} for f in gen.files]
        return {"generation_id": gen.id, "status": gen.status, "model": gen.model, "model_hash": gen.model_hash,
                "seed": gen.seed, "policy_version": gen.policy_version, "created_at": gen.created_at.isoformat(),
                "failure_reason": gen.failure_reason, "files": files}

    @router.get("/v1/generations/{generation_id}/video", response_model=None, response_class=FileResponse,
                responses={200: {"description": "The published clip, byte for byte as signed",
                                 "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}},
                           **problems(401, 404, 410, 503)})
    def get_video(generation_id: str, _client: str = Depends(require_api_key),
                  runtime: Runtime = Depends(get_runtime)) -> FileResponse:
        """The published clip, byte for byte as signed (only ever a published one)."""
        gen = runtime.ledger.get_generation(generation_id)
        if gen is None or gen.status != "published" or not gen.files:
            raise HTTPException(404, f"no published clip for generation {generation_id[:100]!r}")
        path = Path(gen.files[-1].path)
        if not path.is_file():
            raise HTTPException(410, "the published file is no longer on this server")
        return FileResponse(path, media_type=gen.files[-1].mime_type, filename=path.name)

    return router
