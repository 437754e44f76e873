"""`POST /v1/verify`: did Credence make this clip? The same verdict as `credence verify --json`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from detector import default_sources, verify
from provenance.errors import InvalidVideo, ProvenanceError
from provenance.video import probe

from ..deps import get_runtime, require_api_key
from ..runtime import Runtime
from .uploads import as_http_error, receive_upload

router = APIRouter(tags=["verification"])


def check_upload(path: Path, size: int, max_seconds: int) -> dict[str, Any]:
    """Refuse what is not a video we can read, or too long; returns what the clip is.

    Headers only: the sources decode the clip anyway, and a corrupt stream found then is
    `InvalidVideo` (422) all the same.
    """
    if size == 0:
        raise InvalidVideo("the upload is empty")
    info = probe(path, decode_check=False)
    if info.duration_s > max_seconds:
        raise HTTPException(413, f"the clip lasts {info.duration_s:.1f} s, over the {max_seconds} s limit "
                                 "(CREDENCE_MAX_UPLOAD_SECONDS)")
    return {"bytes": size, "width": info.width, "height": info.height, "fps": round(info.fps, 3),
            "duration_s": round(info.duration_s, 3), "codec": info.codec}


def verify_file(runtime: Runtime, path: Path, size: int) -> dict[str, Any]:
    """Check and verify one received file (runs in a worker thread: it is CPU work)."""
    settings = runtime.settings
    clip = check_upload(path, size, settings.max_upload_seconds)
    verdict = verify(path, runtime.verification, default_sources(max_seconds=settings.max_upload_seconds))
    return {**verdict.to_dict(), "clip": clip}


@router.post("/v1/verify")
async def verify_upload(request: Request, runtime: Runtime = Depends(get_runtime),
                        _key: str = Depends(require_api_key)) -> dict[str, Any]:
    """Upload a clip (multipart field `file`, or the raw bytes); get the verdict and its evidence.

    413 over the size or duration limit, 415 for a body that is not a file, 422 for a file
    that is not a readable video (empty, truncated, not a video, smaller than 16 px a side).
    """
    async with receive_upload(request, runtime.settings.max_upload_bytes) as (path, filename, size):
        try:
            result = await run_in_threadpool(verify_file, runtime, path, size)
        except ProvenanceError as exc:
            raise as_http_error(exc) from None
    if filename:
        result["clip"]["filename"] = filename
    return result
