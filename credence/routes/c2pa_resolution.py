"""The C2PA soft-binding resolution API (Decoupled manifests): recover a stripped clip's manifest.

`GET /matches/byBinding?alg=&value=` (also POST with a JSON body), `POST /matches/byContent`
(the clip as the body, or multipart), `GET /manifests/{manifestId}` (`application/c2pa`) and
`GET /services/supportedAlgorithms`, with the JSON shapes of the specification.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel

from detector.resolution import (
    ResolutionError,
    manifest_bytes,
    matches_by_binding,
    matches_by_content,
    supported_algorithms,
)
from provenance.errors import ProvenanceError

from ..deps import get_runtime, require_api_key
from ..runtime import Runtime
from .uploads import as_http_error, receive_upload
from .verify import check_upload

router = APIRouter(tags=["c2pa soft-binding resolution"])


class BindingQuery(BaseModel):
    """Body of `POST /matches/byBinding`."""

    alg: str
    value: str


def _by_binding(runtime: Runtime, request: Request, alg: str, value: str, max_results: int) -> dict[str, Any]:
    try:
        matches = matches_by_binding(runtime.ledger, alg, value, max_results)
    except ResolutionError as exc:
        raise HTTPException(400, str(exc)) from None
    endpoint = str(request.base_url).rstrip("/")
    return {"matches": [m.to_dict(endpoint) for m in matches]}


@router.get("/matches/byBinding")
def get_matches_by_binding(request: Request, alg: str = Query(..., max_length=200),
                           value: str = Query(..., max_length=2000), max_results: int = Query(10, alias="maxResults",
                                                                                              ge=1, le=100),
                           runtime: Runtime = Depends(get_runtime),
                           _key: str = Depends(require_api_key)) -> dict[str, Any]:
    """Manifests whose soft-binding value (base64 of our 8-byte mark id) matches."""
    return _by_binding(runtime, request, alg, value, max_results)


@router.post("/matches/byBinding")
def post_matches_by_binding(body: BindingQuery, request: Request,
                            max_results: int = Query(10, alias="maxResults", ge=1, le=100),
                            runtime: Runtime = Depends(get_runtime),
                            _key: str = Depends(require_api_key)) -> dict[str, Any]:
    """The same, for values too long for a URL."""
    return _by_binding(runtime, request, body.alg, body.value, max_results)


@router.post("/matches/byContent")
async def post_matches_by_content(request: Request, max_results: int = Query(10, alias="maxResults", ge=1, le=100),
                                  alg: str | None = Query(None), runtime: Runtime = Depends(get_runtime),
                                  _key: str = Depends(require_api_key)) -> dict[str, Any]:
    """Manifests of the published clips this content matches (watermark first, then fingerprint)."""
    supported = supported_algorithms()
    names = {a["alg"] for group in supported.values() for a in group}
    if alg is not None and alg not in names:
        raise HTTPException(400, f"unsupported alg {alg!r}; see /services/supportedAlgorithms")
    settings = runtime.settings

    def run(path: Any, size: int) -> list[Any]:
        check_upload(path, size, settings.max_upload_seconds)
        return matches_by_content(path, runtime.verification, max_results)

    async with receive_upload(request, settings.max_upload_bytes) as (path, _name, size):
        try:
            matches = await run_in_threadpool(run, path, size)
        except ProvenanceError as exc:
            raise as_http_error(exc) from None
    endpoint = str(request.base_url).rstrip("/")
    return {"matches": [m.to_dict(endpoint) for m in matches]}


@router.get("/manifests/{manifest_id:path}")
def get_manifest(manifest_id: str, runtime: Runtime = Depends(get_runtime),
                 return_active: bool = Query(False, alias="returnActiveManifest"),
                 _key: str = Depends(require_api_key)) -> Response:
    """The manifest store (JUMBF) exactly as signed into the published clip: `application/c2pa`."""
    data = manifest_bytes(runtime.ledger, manifest_id)
    if data is None:
        raise HTTPException(404, f"no manifest {manifest_id!r}")
    return Response(content=data, media_type="application/c2pa")


@router.get("/services/supportedAlgorithms")
def get_supported_algorithms() -> dict[str, Any]:
    """The soft-binding algorithms this service resolves."""
    return supported_algorithms()
