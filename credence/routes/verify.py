"""`POST /v1/verify`: did Credence make this clip? The same verdict as `credence verify --json`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from detector import matched_record, verify
from provenance.errors import InvalidVideo
from provenance.video import probe
from provenance.video_limits import DecodeLimits

from ..auth import Caller
from ..deps import Gate, gate, get_runtime, require_scope
from ..runtime import Runtime
from .problems import UPLOAD_BODY, UPLOAD_ERRORS
from .uploads import admit_upload, receive_upload

router = APIRouter(tags=["verification"])


class EvidenceItem(BaseModel):
    """What one evidence source found; its other fields are the source's own figures."""

    model_config = ConfigDict(extra="allow")
    source: str = Field(description="`c2pa`, `watermark` or `fingerprint`.")


class ClipInfo(BaseModel):
    """What the uploaded clip is."""

    model_config = ConfigDict(extra="allow")
    bytes: int
    width: int
    height: int
    fps: float
    duration_s: float
    codec: str
    filename: str | None = Field(default=None, description="The client's file name, for a multipart upload.")


class Segment(BaseModel):
    """A span of the upload tied to a published generation (a compilation lists one per part)."""

    model_config = ConfigDict(extra="allow")
    start_s: float = Field(ge=0, description="Where the span starts in the upload (seconds)")
    end_s: float = Field(ge=0, description="Where it ends in the upload (seconds)")
    generation_id: str
    sources: list[str] = Field(description="The evidence sources that place it (fingerprint, watermark, c2pa)")
    clip_start_s: float | None = Field(default=None, description="The published clip's seconds it matched: from")
    clip_end_s: float | None = Field(default=None, description="... to (fingerprint-aligned spans)")
    speed: float | None = Field(default=None, description="The upload's pace against the published clip")


class VerifyAnswer(BaseModel):
    """The verdict: `generated` names the generation; sources that disagree give `review`."""

    model_config = ConfigDict(extra="allow")
    verdict: Literal["generated", "not_generated", "review"]
    generation_id: str | None
    confidence: float = Field(ge=0, le=1)
    evidence: list[EvidenceItem]
    reason: str | None = None
    record: dict[str, Any] | None = Field(default=None, description="For `generated`: the ledger's record of the "
                                          "generation (client, model, policy, mark id, times, files)")
    clip: ClipInfo
    disclosure: dict[str, Any] | None = Field(default=None, description="What the clip discloses: `label` (the "
                                              "visible label recorded, mode and text), `label_source` (`manifest` or "
                                              "`ledger`), `manifest_found` and `mark_found`")
    segments: list[Segment] = Field(default_factory=list, description="Every span of the upload that matches a "
                                    "published clip, in time order; the verdict names the best-supported one")


def check_upload(path: Path, size: int, limits: DecodeLimits) -> dict[str, Any]:
    """Refuse what is not a video we can read, or over the decoding budget; returns what the clip is.

    Headers only, before any decoder opens: frames over the frame box, more pixels in all than
    the budget, or longer than CREDENCE_MAX_UPLOAD_SECONDS is `VideoTooLarge` (413); an absurd
    declaration is `InvalidVideo` (422). The sources decode the clip under the same limits, so a
    stream that switches to a huge size later, or a corrupt one, is `InvalidVideo` (422) then.
    """
    if size == 0:
        raise InvalidVideo("the upload is empty")
    info = probe(path, decode_check=False, limits=limits)
    return {"bytes": size, "width": info.width, "height": info.height, "fps": round(info.fps, 3),
            "duration_s": round(info.duration_s, 3), "codec": info.codec}


def verify_file(runtime: Runtime, path: Path, size: int) -> dict[str, Any]:
    """Check and verify one received file (runs on a verify-gate thread: it is CPU work)."""
    settings = runtime.settings
    clip = check_upload(path, size, settings.decode_limits)
    context = runtime.verification
    verdict = verify(path, context, runtime.verification_sources(max_seconds=settings.max_upload_seconds))
    record = matched_record(context, verdict.generation_id) if verdict.verdict == "generated" else None
    return {**verdict.to_dict(), "record": record, "clip": clip}


@router.post("/v1/verify", response_model=None, openapi_extra={"requestBody": UPLOAD_BODY},
             responses={200: {"model": VerifyAnswer, "description": "The verdict and its evidence"},
                        **UPLOAD_ERRORS})
async def verify_upload(request: Request, _caller: Caller = Depends(require_scope("verify")),
                        runtime: Runtime = Depends(get_runtime),
                        verify_gate: Gate = Depends(gate("verify"))) -> dict[str, Any]:
    """Upload a clip (multipart field `file`, or the raw bytes); get the verdict and its evidence.

    413 over the size or duration limit or the decoding budget (frame size, total pixels), 415
    for a body that is not a file, 422 for a file that is not a readable video (empty, truncated,
    not a video, smaller than 16 px a side, an absurd declared size), 503 when
    the verification queue is full (with `Retry-After`) or a verification runs past its limit.
    """
    with await admit_upload(verify_gate, request) as ticket:
        async with receive_upload(request, runtime.settings.max_upload_bytes) as (path, filename, size):
            result = await ticket.run(verify_file, runtime, path, size)
    if filename:
        result["clip"]["filename"] = filename
    return result
