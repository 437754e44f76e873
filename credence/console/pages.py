"""The console's pages: sign-in, overview, review queue, generation, search and export, verify."""

from __future__ import annotations

import datetime as dt
import secrets
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response, StreamingResponse
from sqlalchemy import func, select

from provenance.errors import ProvenanceError
from provenance.ledger import Generation, ModerationDecision
from provenance.ledger.models import Fingerprint, utcnow
from provenance.quarantine import QuarantineMissing, png

from ..audit import SearchError, SearchFilters, chunked, export_lines, search_generations
from ..generation.executors import executor_for
from ..generation.hold import quarantine_for
from ..review import Reviewer, ReviewError, approve, list_held, reject, show
from ..reviewers import ApprovalForbidden
from .core import (
    PRESESSION_COOKIE,
    SESSION_COOKIE,
    ConsoleError,
    ConsoleSession,
    SignInFailed,
    _redirect,
    _runtime,
    _security_headers,
    _set_cookie,
    _store,
    check_csrf,
    current,
    needs,
    render,
    resume,
    sign_in,
)

#: Thumbnails shown per generation.
THUMBNAILS = 6
#: Days the overview's chart covers.
CHART_DAYS = 14
ACTION_COLOURS = {"allow": "#4c9a6a", "review": "#d9a441", "block": "#c4473a", "approve": "#3f7cc0",
                  "reject": "#7a4fb0"}


def _either(session: ConsoleSession = Depends(current)) -> ConsoleSession:
    if not (session.can("review") or session.can("audit")):
        raise ConsoleError(403, "this key carries neither the review nor the audit scope")
    return session


# -- overview ------------------------------------------------------------------------------------
def overview_stats(runtime: Any, days: int = CHART_DAYS) -> dict[str, Any]:
    """Decisions per day by action and by category, and the review queue's length and age."""
    since = (utcnow() - dt.timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    day = func.date(ModerationDecision.created_at)
    with runtime.ledger.session() as s:
        by_action = s.execute(select(day, ModerationDecision.action, func.count())
                              .where(ModerationDecision.created_at >= since)
                              .group_by(day, ModerationDecision.action)).all()
        categories: Counter[str] = Counter()
        # Only decisions that held or blocked something name categories; allows are most rows and name none.
        for reasons, in s.execute(select(ModerationDecision.reasons).where(
                ModerationDecision.created_at >= since, ModerationDecision.action.in_(("review", "block")))):
            for reason in reasons or []:
                if isinstance(reason, dict) and reason.get("category"):
                    categories[reason["category"]] += 1
        queue = s.execute(select(func.count(), func.min(Generation.updated_at))
                          .where(Generation.status == "review")).one()
        by_stage = dict(s.execute(select(Generation.stage, func.count()).where(Generation.status == "review")
                                  .group_by(Generation.stage)).all())
    dates = [(since + dt.timedelta(days=i)).date().isoformat() for i in range(days)]
    counts: dict[str, dict[str, int]] = {d: defaultdict(int) for d in dates}
    for when, action, count in by_action:
        key = when.isoformat() if isinstance(when, dt.date) else str(when)[:10]
        if key in counts:
            counts[key][action] += int(count)
    oldest = queue[1]
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=dt.UTC)
    age = (utcnow() - oldest) if oldest else None
    return {"dates": dates, "counts": counts, "categories": categories.most_common(12), "queue_length": queue[0],
            "queue_by_stage": by_stage, "queue_age_hours": round(age.total_seconds() / 3600, 1) if age else None,
            "chart": _chart(dates, counts), "category_chart": _bars(categories.most_common(12))}


def _chart(dates: list[str], counts: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Geometry of a stacked bar chart (inline SVG: no script, no external library)."""
    width, height, pad = 720, 220, 30
    peak = max([sum(c.values()) for c in counts.values()] + [1])
    slot = (width - 2 * pad) / max(len(dates), 1)
    bars = []
    for i, date in enumerate(dates):
        y = height - pad
        for action in ("allow", "review", "block", "approve", "reject"):
            n = counts[date].get(action, 0)
            if not n:
                continue
            h = (height - 2 * pad) * n / peak
            y -= h
            bars.append({"x": round(pad + i * slot + 2, 1), "y": round(y, 1), "w": round(slot - 4, 1),
                         "h": round(h, 1), "colour": ACTION_COLOURS[action], "title": f"{date} {action}: {n}"})
    labels = [{"x": round(pad + i * slot + slot / 2, 1), "text": d[5:]} for i, d in enumerate(dates)]
    return {"width": width, "height": height, "bars": bars, "labels": labels, "peak": peak,
            "legend": list(ACTION_COLOURS.items())}


def _bars(pairs: list[tuple[str, int]]) -> list[dict[str, Any]]:
    peak = max([n for _c, n in pairs] + [1])
    return [{"name": name, "count": n, "width": round(400 * n / peak, 1)} for name, n in pairs]


# -- frames --------------------------------------------------------------------------------------
def _published_frames(path: Path, count: int) -> list[np.ndarray]:
    from provenance.video import iter_frames

    frames = list(iter_frames(path))
    if not frames:
        return []
    picks = np.unique(np.linspace(0, len(frames) - 1, num=min(count, len(frames))).round().astype(int))
    return [frames[i] for i in picks]


def _frame_indices(total: int, count: int = THUMBNAILS) -> list[int]:
    if total <= 0:
        return []
    return [int(i) for i in np.unique(np.linspace(0, total - 1, num=min(count, total)).round().astype(int))]


def add_routes(router: APIRouter) -> None:
    """Register every page on `router`."""

    @router.get("/console")
    def home(request: Request) -> Response:
        """Signed out: the sign-in page (200). Signed in: the overview."""
        session = resume(request)
        if session is None:
            token = secrets.token_urlsafe(32)
            response = render(request, "signin.html", presession=token)
            _set_cookie(request, response, PRESESSION_COOKIE, token, 3600)
            return response
        return render(request, "overview.html", session=session, stats=overview_stats(_runtime(request)),
                      page="overview")

    @router.post("/console/signin")
    def signin(request: Request, key: str = Form("", max_length=600), csrf: str = Form("", max_length=200)
               ) -> Response:
        """Exchange a review or audit key for a session cookie."""
        expected = request.cookies.get(PRESESSION_COOKIE, "")
        if not csrf or not expected or not secrets.compare_digest(csrf, expected):
            raise ConsoleError(403, "the form's CSRF token is missing or wrong; reload the page and try again")
        try:
            sid, _record = sign_in(request, key)
        except SignInFailed as failed:
            token = secrets.token_urlsafe(32)
            response = render(request, "signin.html", failed.status, presession=token, error=failed.message)
            _set_cookie(request, response, PRESESSION_COOKIE, token, 3600)
            if failed.retry_after is not None:
                response.headers["Retry-After"] = str(failed.retry_after)
            return response
        # A session the browser held before is ended, not left to run out beside the new one.
        _store(request).drop(request.cookies.get(SESSION_COOKIE))
        response = _redirect("/console")
        _set_cookie(request, response, SESSION_COOKIE, sid, int(_store(request).seconds))
        response.delete_cookie(PRESESSION_COOKIE, path="/console")
        return response

    @router.post("/console/signout")
    def signout(request: Request, csrf: str = Form("", max_length=200),
                session: ConsoleSession = Depends(current)) -> Response:
        """End the session."""
        check_csrf(session, csrf)
        _store(request).drop(request.cookies.get(SESSION_COOKIE))
        response = _redirect("/console")
        response.delete_cookie(SESSION_COOKIE, path="/console")
        return response

    @router.get("/console/queue")
    def queue(request: Request, stage: str | None = None, category: str | None = None,
              session: ConsoleSession = Depends(needs("review"))) -> Response:
        """The review queue: frames, reasons, policy, client, approve and reject."""
        runtime = _runtime(request)
        try:
            items = list_held(runtime, stage=stage or None, category=category or None, limit=100)
        except ReviewError as exc:
            raise ConsoleError(400, str(exc)) from None
        for item in items:
            q = item.get("quarantine")
            item["thumbnails"] = _frame_indices(q["frames"]) if q else []
        return render(request, "queue.html", session=session, items=items, stage=stage or "",
                      category=category or "", page="queue")

    @router.post("/console/reviews/{generation_id}/{action}")
    def decide(request: Request, generation_id: str, action: str, note: str = Form("", max_length=2000),
               csrf: str = Form("", max_length=200), back: str = Form("queue", max_length=20),
               session: ConsoleSession = Depends(needs("review"))) -> Response:
        """Approve or reject from the queue or a generation's page."""
        check_csrf(session, csrf)
        if action not in ("approve", "reject"):
            raise ConsoleError(404, "no such action")
        runtime = _runtime(request)
        reviewer = Reviewer.from_caller(session.caller)
        try:
            if action == "approve":
                outcome = approve(runtime, generation_id, reviewer, note, enqueue=executor_for(request.app).enqueue)
            else:
                outcome = reject(runtime, generation_id, reviewer, note)
            session.say(f"{generation_id[:8]}: {outcome.detail} (now {outcome.status})")
        except ApprovalForbidden as exc:
            raise ConsoleError(403, str(exc)) from None  # not a flash: this reviewer may not decide it at all
        except (ReviewError, ProvenanceError) as exc:
            session.say(f"{generation_id[:8]}: {exc}")
        target = f"/console/generations/{generation_id}" if back == "generation" else "/console/queue"
        return _redirect(target)

    @router.get("/console/generations/{generation_id}")
    def generation(request: Request, generation_id: str, session: ConsoleSession = Depends(_either)) -> Response:
        """Prompt, decisions, frames, manifest summary, mark id, fingerprints, the clip, the audit trail."""
        runtime = _runtime(request)
        try:
            item = show(runtime, generation_id)
        except ReviewError:
            raise ConsoleError(404, f"no generation {generation_id[:100]!r}") from None
        with runtime.ledger.session() as s:
            prints = s.execute(select(Fingerprint.algorithm, Fingerprint.seconds, Fingerprint.regions)
                               .where(Fingerprint.generation_id == generation_id)).all()
        frames = 0
        if item.get("quarantine"):
            frames = item["quarantine"]["frames"]
        elif item["files"]:
            frames = THUMBNAILS
        item["thumbnails"] = _frame_indices(frames)
        return render(request, "generation.html", session=session, item=item, fingerprints=prints,
                      has_clip=bool(item.get("quarantine") or item["files"]), page="search")

    @router.get("/console/generations/{generation_id}/frames/{index}.png")
    def frame(request: Request, generation_id: str, index: int,
              _session: ConsoleSession = Depends(_either)) -> Response:
        """One frame as PNG: from quarantine while held, from the released file once published."""
        runtime = _runtime(request)
        quarantine = quarantine_for(runtime)
        try:
            data = quarantine.thumbnail(generation_id, index)
        except QuarantineMissing:
            gen = runtime.ledger.get_generation(generation_id)
            if gen is None or gen.status != "published" or not gen.files or not Path(gen.files[0].path).is_file():
                raise ConsoleError(404, "no frames for this generation") from None
            picks = _published_frames(Path(gen.files[0].path), THUMBNAILS)
            if not 0 <= index < len(picks):
                raise ConsoleError(404, "no such frame") from None
            data = png(picks[index])
        return _security_headers(Response(data, media_type="image/png"))

    @router.get("/console/generations/{generation_id}/clip")
    def clip(request: Request, generation_id: str, _session: ConsoleSession = Depends(_either)) -> Response:
        """The clip: the reviewer's preview while held, the released file once published."""
        runtime = _runtime(request)
        preview = None
        try:
            preview = quarantine_for(runtime).preview(generation_id)
        except QuarantineMissing:
            preview = None
        if preview is None:
            gen = runtime.ledger.get_generation(generation_id)
            if gen is None or gen.status != "published" or not gen.files or not Path(gen.files[0].path).is_file():
                raise ConsoleError(404, "no clip for this generation")
            preview = Path(gen.files[0].path)
        return _security_headers(FileResponse(preview, media_type="video/mp4"))  # type: ignore[return-value]

    @router.get("/console/search")
    def search(request: Request, session: ConsoleSession = Depends(needs("audit")), client: str = "",
               since: str = "", until: str = "", status: str = "", action: str = "", stage: str = "",
               category: str = "", policy_version: str = "", model: str = "", mark: str = "", prompt: str = "",
               cursor: str = "") -> Response:
        """Search generations and decisions with every filter; export what matches."""
        form = {"client": client, "since": since, "until": until, "status": status, "action": action,
                "stage": stage, "category": category, "policy_version": policy_version, "model": model,
                "mark": mark, "prompt": prompt}
        error, page = None, None
        try:
            filters = _filters(form)
            page = search_generations(_runtime(request).ledger, filters, limit=50, cursor=cursor or None)
        except (SearchError, ValueError) as exc:
            error = str(exc)
        from urllib.parse import urlencode

        query = urlencode({k: v for k, v in form.items() if v})
        return render(request, "search.html", 400 if error else 200, session=session, form=form, results=page,
                      error=error, query=query, page="search")

    @router.get("/console/export")
    def export(request: Request, _session: ConsoleSession = Depends(needs("audit")), fmt: str = "csv",
               client: str = "", since: str = "", until: str = "", status: str = "", action: str = "",
               stage: str = "", category: str = "", policy_version: str = "", model: str = "", mark: str = "",
               prompt: str = "") -> Response:
        """The search's matches, streamed as CSV or JSON lines."""
        if fmt not in ("csv", "jsonl"):
            raise ConsoleError(400, "format must be csv or jsonl")
        try:
            filters = _filters({"client": client, "since": since, "until": until, "status": status, "action": action,
                                "stage": stage, "category": category, "policy_version": policy_version,
                                "model": model, "mark": mark, "prompt": prompt})
        except ValueError as exc:
            raise ConsoleError(400, str(exc)) from None
        lines = export_lines(_runtime(request).ledger, filters.since, filters.until, fmt, filters)
        media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
        return StreamingResponse(chunked(lines), media_type=media, headers={
            "Content-Disposition": f'attachment; filename="credence-audit.{fmt}"', "Cache-Control": "no-store"})

    @router.get("/console/verify")
    def verify_page(request: Request, session: ConsoleSession = Depends(_either)) -> Response:
        """Upload a clip to ask whether Credence made it."""
        return render(request, "verify.html", session=session, result=None, page="verify")

    @router.post("/console/verify")
    async def verify_upload(request: Request, csrf: str = Query("", max_length=200),
                            session: ConsoleSession = Depends(_either)) -> Response:
        """The detector's verdict and evidence for the uploaded clip (under the API's verification limits).

        The form posts its CSRF token in its URL (`?csrf=`), so that the token and the declared size are
        checked before a byte of the upload is read (a form field comes after the file); the clip then
        streams to a temporary file under the upload limit, as on `POST /v1/verify`.
        """
        check_csrf(session, csrf)
        from ..routes.uploads import ENVELOPE_BYTES, receive_upload
        from ..routes.verify import verify_file

        runtime = _runtime(request)
        limit = runtime.settings.max_upload_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit + ENVELOPE_BYTES:
            raise ConsoleError(413, f"the upload is larger than {limit} bytes")
        # The same gate as POST /v1/verify: the console cannot run more verifications than the API allows.
        with request.app.state.gates["verify"].admit() as ticket:
            try:
                async with receive_upload(request, limit) as (path, filename, size):
                    try:
                        result = await ticket.run(verify_file, runtime, path, size)
                        error = None
                    except ProvenanceError as exc:
                        result, error = None, str(exc).replace(str(path), "the upload")
            except HTTPException as exc:  # over the limit, not a form, a malformed body
                raise ConsoleError(exc.status_code, str(exc.detail)) from None
            except RequestValidationError:
                raise ConsoleError(400, "the form has no file: choose a clip to verify") from None
        return render(request, "verify.html", 422 if error else 200, session=session, result=result, error=error,
                      filename=filename, page="verify")


def _filters(form: dict[str, str]) -> SearchFilters:
    def moment(text: str) -> dt.datetime | None:
        if not text:
            return None
        value = dt.datetime.fromisoformat(text)
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value

    return SearchFilters(client=form["client"] or None, since=moment(form["since"]), until=moment(form["until"]),
                         status=form["status"] or None, action=form["action"] or None, stage=form["stage"] or None,
                         category=form["category"] or None, policy_version=form["policy_version"] or None,
                         model=form["model"] or None, mark=form["mark"] or None, prompt=form["prompt"] or None)

