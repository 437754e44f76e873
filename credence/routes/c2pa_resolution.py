"""The C2PA soft-binding resolution API (Decoupled manifests): recover a stripped clip's manifest.

`GET /matches/byBinding?alg=&value=` (also POST with a JSON body), `POST /matches/byContent`
(the clip as the body, or multipart), `GET /manifests/{manifestId}` (`application/c2pa`) and
`GET /services/supportedAlgorithms`, with the JSON shapes of the specification. A bad request
on these routes is 400 (the specification's status), with the problem's `errors` naming the field.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from detector.resolution import (
    manifest_bytes,
    matches_by_binding,
    matches_by_content,
    supported_algorithms,
)

from ..auth import Caller
from ..deps import Gate, gate, get_runtime, require_scope
from ..runtime import Runtime
from .problems import UPLOAD_BODY, problems
from .uploads import admit_upload, receive_upload
from .verify import check_upload

#: The routes of this router answer 400 (not 422) for an invalid request: `credence.app` reads it.
TAG = "c2pa soft-binding resolution"
router = APIRouter(tags=[TAG])

#: Our binding value: the 8-byte mark id in base64 (always 11 characters and one `=`).
BINDING_VALUE = r"^[A-Za-z0-9+/]{11}=$"
BINDING_DESCRIPTION = "The soft-binding value: our 64-bit mark id, 8 bytes in base64 (12 characters)."


class BindingQuery(BaseModel):
    """Body of `POST /matches/byBinding`."""

    model_config = ConfigDict(strict=True)
    alg: str = Field(max_length=200, description="A soft-binding algorithm this service resolves by binding.")
    value: str = Field(pattern=BINDING_VALUE, description=BINDING_DESCRIPTION)


class ManifestMatch(BaseModel):
    """One manifest the query matched."""

    manifestId: str
    similarityScore: int = Field(ge=0, le=100)
    endpoint: str | None = None


class Matches(BaseModel):
    """The specification's answer: matches, best first (empty when nothing of ours matches)."""

    matches: list[ManifestMatch]


class Algorithm(BaseModel):
    """One algorithm name."""

    alg: str


class SupportedAlgorithms(BaseModel):
    """The soft-binding algorithms this service resolves."""

    watermarks: list[Algorithm]
    fingerprints: list[Algorithm]


def document(openapi: dict[str, Any]) -> None:
    """Name the algorithms in the OpenAPI document (read when it is first built, not at start-up:
    the watermark's name lives in a module that imports torch)."""
    supported = supported_algorithms()
    by_binding = sorted(a["alg"] for a in supported["watermarks"])
    every = sorted({a["alg"] for group in supported.values() for a in group})
    paths = openapi.get("paths", {})
    for method, names in (("get", by_binding), ("post", every)):
        path = "/matches/byBinding" if method == "get" else "/matches/byContent"
        for parameter in paths.get(path, {}).get(method, {}).get("parameters", []):
            if parameter.get("name") == "alg":
                schema = parameter.setdefault("schema", {})
                schema.pop("anyOf", None)
                schema.update({"type": "string", "enum": names})
    body = openapi.get("components", {}).get("schemas", {}).get("BindingQuery", {})
    if "alg" in body.get("properties", {}):
        body["properties"]["alg"]["enum"] = by_binding


def _by_binding(runtime: Runtime, request: Request, alg: str, value: str, max_results: int) -> dict[str, Any]:
    matches = matches_by_binding(runtime.ledger, alg, value, max_results)  # ResolutionError: 400
    endpoint = str(request.base_url).rstrip("/")
    return {"matches": [m.to_dict(endpoint) for m in matches]}


BINDING_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": Matches, "description": "The manifests whose soft binding is this value"},
    **problems(400, 401, 403, 429, 503)}


@router.get("/matches/byBinding", response_model=None, responses=BINDING_RESPONSES)
def get_matches_by_binding(request: Request, alg: str = Query(..., max_length=200),
                           value: str = Query(..., pattern=BINDING_VALUE, description=BINDING_DESCRIPTION),
                           max_results: int = Query(10, alias="maxResults", ge=1, le=100),
                           _caller: Caller = Depends(require_scope("verify")),
                           runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """Manifests whose soft-binding value (base64 of our 8-byte mark id) matches."""
    return _by_binding(runtime, request, alg, value, max_results)


@router.post("/matches/byBinding", response_model=None, responses={**BINDING_RESPONSES, **problems(408)})
def post_matches_by_binding(body: BindingQuery, request: Request,
                            max_results: int = Query(10, alias="maxResults", ge=1, le=100),
                            _caller: Caller = Depends(require_scope("verify")),
                            runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """The same, for values too long for a URL."""
    return _by_binding(runtime, request, body.alg, body.value, max_results)


@router.post("/matches/byContent", response_model=None, openapi_extra={"requestBody": UPLOAD_BODY},
             responses={200: {"model": Matches, "description": "Manifests of the published clips this content "
                                                               "matches (watermark first, then fingerprint)"},
                        **problems(400, 401, 403, 429, 408, 413, 415, 503), **problems(422)})
async def post_matches_by_content(request: Request, max_results: int = Query(10, alias="maxResults", ge=1, le=100),
                                  alg: str | None = Query(None, max_length=200),
                                  _caller: Caller = Depends(require_scope("verify")),
                                  runtime: Runtime = Depends(get_runtime),
                                  verify_gate: Gate = Depends(gate("verify"))) -> dict[str, Any]:
    """Manifests of the published clips this content matches (watermark first, then fingerprint).

    400 for an unknown `alg` or a malformed body, 422 for a file that is not a readable video.
    """
    supported = supported_algorithms()
    names = {a["alg"] for group in supported.values() for a in group}
    if alg is not None and alg not in names:
        raise HTTPException(400, f"unsupported alg {alg!r}; see /services/supportedAlgorithms")
    settings = runtime.settings

    def run(path: Any, size: int) -> list[Any]:
        check_upload(path, size, settings.decode_limits)
        return matches_by_content(path, runtime.verification, max_results)

    with await admit_upload(verify_gate, request) as ticket:
        async with receive_upload(request, settings.max_upload_bytes) as (path, _name, size):
            matches = await ticket.run(run, path, size)
    endpoint = str(request.base_url).rstrip("/")
    return {"matches": [m.to_dict(endpoint) for m in matches]}


@router.get("/manifests/{manifest_id:path}", response_model=None,
            responses={200: {"description": "The manifest store (JUMBF) exactly as signed into the published clip",
                             "content": {"application/c2pa": {"schema": {"type": "string", "format": "binary"}}}},
                       **problems(400, 401, 403, 429, 404, 503)})
def get_manifest(manifest_id: str, return_active: bool = Query(False, alias="returnActiveManifest"),
                 _caller: Caller = Depends(require_scope("verify")),
                 runtime: Runtime = Depends(get_runtime)) -> Response:
    """The manifest store (JUMBF) exactly as signed into the published clip: `application/c2pa`."""
    data = manifest_bytes(runtime.ledger, manifest_id)
    if data is None:
        raise HTTPException(404, f"no manifest {manifest_id[:200]!r}")
    return Response(content=data, media_type="application/c2pa")


@router.get("/services/supportedAlgorithms", response_model=None,
            responses={200: {"model": SupportedAlgorithms, "description": "The algorithms this service resolves"}})
def get_supported_algorithms() -> dict[str, Any]:
    """The soft-binding algorithms this service resolves."""
    return supported_algorithms()
