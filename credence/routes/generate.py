"""`POST /v1/generations`: the compliant generation API, and the record of each generation."""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from .. import pipeline
from ..deps import get_moderator, get_runtime, require_api_key
from ..runtime import Runtime

router = APIRouter(tags=["generation"])

# One generation at a time per process: the model holds the accelerator (or both CPU cores).
_generate_lock = threading.Lock()

STATUS_CODES = {"published": 201, "review": 202, "blocked": 403}


class GenerationBody(BaseModel):
    """A generation request. Sizes and steps default to the model's own."""

    prompt: str = Field(min_length=1, max_length=20_000)
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    frames: int | None = Field(default=None, ge=1, le=1024)
    steps: int | None = Field(default=None, ge=1, le=500)


@router.post("/v1/generations")
async def create_generation(body: GenerationBody, request: Request, runtime: Runtime = Depends(get_runtime),
                            client: str = Depends(require_api_key)) -> JSONResponse:
    """Moderate, generate, watermark, sign and record: 201 published, 202 held for review, 403 blocked."""
    # Loaded here, after the body validated: a malformed request must not pay for the model.
    moderator = await run_in_threadpool(get_moderator, request)
    outputs = runtime.settings.outputs_dir
    outputs.mkdir(parents=True, exist_ok=True)
    output = outputs / f"api-{dt.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(4)}.mp4"
    options = pipeline.GenerateOptions(model=runtime.settings.default_model, seed=body.seed, frames=body.frames,
                                       steps=body.steps, client=client, device=runtime.settings.device,
                                       dtype=runtime.settings.dtype, cpu_offload=runtime.settings.cpu_offload,
                                       vae_tiling=runtime.settings.vae_tiling)

    def run() -> pipeline.GenerateOutcome:
        with _generate_lock:
            return pipeline.generate(runtime, moderator, body.prompt, output, options)

    outcome = await run_in_threadpool(run)
    result = outcome.to_dict()
    if result.get("path"):
        result["video_url"] = f"/v1/generations/{outcome.generation_id}/video"
        result.pop("path")  # server paths are not the client's business
    return JSONResponse(result, STATUS_CODES[outcome.status])


@router.get("/v1/generations/{generation_id}")
def get_generation(generation_id: str, runtime: Runtime = Depends(get_runtime),
                   _client: str = Depends(require_api_key)) -> dict[str, Any]:
    """The record of one generation: status, model, policy, and its published file."""
    gen = runtime.ledger.get_generation(generation_id)
    if gen is None:
        raise HTTPException(404, f"no generation {generation_id}")
    files = [{"sha256": f.sha256, "size_bytes": f.size_bytes, "manifest_label": f.manifest_label,
              "mime_type": f.mime_type} for f in gen.files]
    return {"generation_id": gen.id, "status": gen.status, "model": gen.model, "model_hash": gen.model_hash,
            "seed": gen.seed, "policy_version": gen.policy_version, "created_at": gen.created_at.isoformat(),
            "failure_reason": gen.failure_reason, "files": files}


@router.get("/v1/generations/{generation_id}/video")
def get_video(generation_id: str, runtime: Runtime = Depends(get_runtime),
              _client: str = Depends(require_api_key)) -> FileResponse:
    """The published clip, byte for byte as signed (only ever a published one)."""
    gen = runtime.ledger.get_generation(generation_id)
    if gen is None or gen.status != "published" or not gen.files:
        raise HTTPException(404, f"no published clip for generation {generation_id}")
    path = Path(gen.files[-1].path)
    if not path.is_file():
        raise HTTPException(410, "the published file is no longer on this server")
    return FileResponse(path, media_type=gen.files[-1].mime_type, filename=path.name)
