"""The console's compliance page: the disclosure evidence for a period (see `credence.compliance`).

An auditor picks a period and, optionally, a client, and sees per client and in total what was
published, with a verified manifest, with the watermark read back, with which visible label, and
what was held or blocked; the audit chain's head and the report's digest are shown with it, and
the CSV and JSON behind the page are one click away (`GET /v1/compliance/report` answers the same).
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from ..compliance import LABEL_COLUMNS, ComplianceError, Period, compliance_report, parse_moment, report_csv
from .core import ConsoleSession, _runtime, _security_headers, needs, render


def add_routes(router: APIRouter) -> None:
    """Register `/console/compliance` and its CSV download."""

    @router.get("/console/compliance")
    def compliance(request: Request, session: ConsoleSession = Depends(needs("audit")), since: str = "",
                   until: str = "", client: str = "") -> Response:
        """The report for the period in the form (all time when empty)."""
        form = {"since": since, "until": until, "client": client}
        error, report = None, None
        try:
            period = Period(parse_moment(since, "since"), parse_moment(until, "until"))
            report = compliance_report(_runtime(request).ledger, period, client.strip() or None)
        except ComplianceError as exc:
            error = str(exc)
        query = urlencode({k: v for k, v in form.items() if v})
        return render(request, "compliance.html", 400 if error else 200, session=session, form=form, report=report,
                      error=error, query=query, modes=LABEL_COLUMNS, page="compliance")

    @router.get("/console/compliance.csv")
    def compliance_csv(request: Request, _session: ConsoleSession = Depends(needs("audit")), since: str = "",
                       until: str = "", client: str = "") -> Response:
        """The same report as CSV (one row per client and a total row)."""
        try:
            period = Period(parse_moment(since, "since"), parse_moment(until, "until"))
            report = compliance_report(_runtime(request).ledger, period, client.strip() or None)
        except ComplianceError as exc:
            return _security_headers(Response(str(exc) + "\n", 400, media_type="text/plain; charset=utf-8"))
        return _security_headers(Response(report_csv(report), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": 'attachment; filename="credence-compliance.csv"'}))
