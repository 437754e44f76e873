"""`GET /v1/compliance/report`: the disclosure evidence for a period, for keys with the `audit` scope.

The same report as `credence compliance report` (see `credence.compliance`): JSON by default,
CSV with `format=csv`. It is evidence towards EU AI Act Art. 50(2) and 50(4) and the Code of
Practice, linked to the audit chain's head (signed with the deployment's key); never a claim of
certification.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ..auth import Caller
from ..compliance import ComplianceError, Period, compliance_report, parse_moment, report_csv
from ..deps import get_runtime, require_scope
from ..runtime import Runtime
from .problems import problems

router = APIRouter(tags=["audit"])


def _not_a_number(value: Any) -> Any:
    """Pydantic also reads a bare number as a Unix time; the schema says date or date-time, so refuse it."""
    if isinstance(value, int | float) or (isinstance(value, str) and re.fullmatch(r"\s*[+-]?[\d.eE+]+\s*", value)):
        raise ValueError("must be an ISO 8601 date or date-time, such as 2026-12-01 or 2026-12-01T10:00:00Z")
    return value


#: A date or a date-time, exactly what its schema (anyOf `date`, `date-time`) says: a value the
#: schema allows is never answered 422.
IsoDay = Annotated[dt.datetime | dt.date, BeforeValidator(_not_a_number)]


class ComplianceReport(BaseModel):
    """Per client and in total: published, manifest, watermark_read_back, visible_label, held, blocked."""

    model_config = ConfigDict(extra="allow")
    report: str
    generated_at: str
    period: dict[str, str | None]
    client: str | None
    totals: dict[str, Any]
    clients: list[dict[str, Any]]
    digest: str = Field(description="SHA-256 of the canonical figures: the same for every run over a closed period.")
    audit_chain: dict[str, Any] = Field(description="The audit chain's head at report time, signed when the "
                                                    "deployment's key is at hand.")
    watermark_read_back_recorded: bool
    notes: list[str]
    evidence_for: list[dict[str, Any]]
    statement: str


@router.get("/v1/compliance/report", response_model=ComplianceReport, responses={
    200: {"description": "The report (JSON), or one CSV row per client and a total row with `format=csv`",
          "content": {"text/csv": {"schema": {"type": "string"}}}},
    **problems(401, 403, 404, 422, 503)})
def compliance(since: IsoDay | None = Query(None, description="From this ISO date or date-time (UTC when no "
                                           "offset), inclusive: `2026-12-01` or `2026-12-01T10:00:00Z`."),
               until: IsoDay | None = Query(None, description="Up to this ISO date or date-time, exclusive."),
               client: str | None = Query(None, max_length=200, description="A client's id or name."),
               format: Literal["json", "csv"] = "json",
               _caller: Caller = Depends(require_scope("audit")),
               runtime: Runtime = Depends(get_runtime)) -> Any:
    """Disclosure evidence for [since, until): per client and in total, from ledger rows (SQL aggregates)."""
    try:
        # Typed as date-times so the schema says what is accepted (a schema-valid value never gets a 422).
        start = parse_moment(since.isoformat(), "since") if since is not None else None
        end = parse_moment(until.isoformat(), "until") if until is not None else None
    except ComplianceError as exc:
        raise HTTPException(422, str(exc)) from None
    inverted = start is not None and end is not None and end < start
    if inverted:  # nothing lies in an inverted period: report it empty and say why (a schema-valid query is no 4xx)
        end = start
    try:
        document = compliance_report(runtime.ledger, Period(start, end), client, identity=_identity(runtime))
    except ComplianceError as exc:
        raise HTTPException(404, str(exc)) from None  # the one error left: no client has this id or name
    if inverted:
        document["notes"] = [*document.get("notes", []), "until is before since: the period is empty"]
    if format == "csv":
        return Response(report_csv(document), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="credence-compliance.csv"'})
    return document


def _identity(runtime: Runtime) -> Any:
    """The signing identity for the head's signature, or None (an unsigned head) when it cannot be loaded."""
    from provenance.errors import ProvenanceError

    try:
        return runtime.identity
    except ProvenanceError:
        return None
