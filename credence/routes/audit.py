"""Audit search and export over HTTP, for keys with the `audit` scope.

`GET /v1/audit/generations` pages through generations and their decisions (newest first, a
cursor for the next page); `GET /v1/audit/export` streams CSV or JSON lines for a time range,
read from the ledger in batches while it is sent (flat memory for any number of rows).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from ..audit import SearchError, SearchFilters, chunked, decode_cursor, export_lines, search_generations
from ..auth import Caller
from ..deps import get_runtime, require_scope
from ..runtime import Runtime
from .generate import IsoDateTime
from .problems import problems

router = APIRouter(tags=["audit"])


class AuditPage(BaseModel):
    """One page of generations with their decisions."""

    items: list[dict[str, Any]]
    next_cursor: str | None


def filters_from_query(client: str | None = Query(None, max_length=200),
                       since: IsoDateTime | None = None, until: IsoDateTime | None = None,
                       status: str | None = Query(None, max_length=16),
                       action: str | None = Query(None, max_length=16),
                       stage: str | None = Query(None, max_length=16),
                       category: str | None = Query(None, max_length=64),
                       policy_version: str | None = Query(None, max_length=64),
                       model: str | None = Query(None, max_length=200),
                       mark: str | None = Query(None, max_length=16, pattern="^[0-9a-fA-F]{1,16}$"),
                       prompt: str | None = Query(None, max_length=4000)) -> SearchFilters:
    """The search filters, from the query string (times in ISO 8601)."""
    return SearchFilters(client=client, since=since, until=until, status=status, action=action, stage=stage,
                         category=category, policy_version=policy_version, model=model, mark=mark, prompt=prompt)


@router.get("/v1/audit/generations", response_model=AuditPage, responses=problems(400, 401, 403, 404, 422, 503))
def audit_generations(filters: SearchFilters = Depends(filters_from_query), limit: int = Query(50, ge=1, le=1000),
                      cursor: str | None = Query(None, max_length=400, pattern=r"^[A-Za-z0-9_\-]+={0,2}$"),
                      _caller: Caller = Depends(require_scope("audit")),
                      runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """Generations matching every given filter, newest first, each with its decisions."""
    if cursor is not None:
        try:
            decode_cursor(cursor)
        except SearchError:  # a cursor names a page: one never given out names none (404, as list generations)
            raise HTTPException(404, "no page at this cursor (not a cursor this server gave out)") from None
    try:
        page = search_generations(runtime.ledger, filters, limit=limit, cursor=cursor)
    except SearchError as exc:
        raise HTTPException(400, str(exc)) from None
    return {"items": page.items, "next_cursor": page.next_cursor}


@router.get("/v1/audit/export", response_class=StreamingResponse, responses={
    200: {"description": "CSV (with a header row) or JSON lines, streamed",
          "content": {"text/csv": {"schema": {"type": "string"}},
                      "application/x-ndjson": {"schema": {"type": "string"}}}},
    **problems(400, 401, 403, 422, 503)})
def audit_export(since: IsoDateTime | None = None, until: IsoDateTime | None = None,
                 format: Literal["csv", "jsonl"] = "jsonl", filters: SearchFilters = Depends(filters_from_query),
                 _caller: Caller = Depends(require_scope("audit")),
                 runtime: Runtime = Depends(get_runtime)) -> StreamingResponse:
    """Every matching generation created in [since, until), oldest first, streamed as it is read."""
    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    name = f"credence-audit.{'csv' if format == 'csv' else 'jsonl'}"
    return StreamingResponse(chunked(export_lines(runtime.ledger, since, until, format, filters)), media_type=media,
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


class AuditHead(BaseModel):
    """The audit chain's head: keep it (signed) outside the database to prove later that the log up to
    `last_id` was neither edited nor cut back."""

    last_id: int
    last_hash: str
    rows: int
    updated_at: str | None


@router.get("/v1/audit/head", response_model=AuditHead, responses=problems(401, 403, 503))
def audit_head(_caller: Caller = Depends(require_scope("audit")),
               runtime: Runtime = Depends(get_runtime)) -> dict[str, Any]:
    """The audit log's hash-chain head (`credence audit head --sign` signs it with the deployment's key)."""
    from provenance.ledger.audit_chain import head

    return head(runtime.ledger.engine)
