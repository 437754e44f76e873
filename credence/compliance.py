"""Compliance evidence: for a period, per client and in total, what the ledger shows was disclosed.

Why: EU AI Act Art. 50(2) asks providers to mark outputs in a machine-readable, detectable way,
Art. 50(4) asks deployers to disclose deep fakes, and the Commission's Code of Practice on marking
and labelling describes the layers (secured metadata, an imperceptible watermark, logging, a
visible label at first exposure). A client or an auditor needs to show, for a period, that every
clip carried them. This module counts, from ledger rows only:

* `published`: files released in the period (`published_files.created_at`, generation `published`);
* `manifest`: of those, files whose signed manifest read back valid, trusted and ours at publish;
* `watermark_read_back`: of those, files whose mark was read back at publish — counted only when
  the ledger records it (a `published_files.watermark_read_back` column, issue 22); until then the
  figure is null and the report says that read-back is not recorded; files published before it was
  recorded are counted apart (`watermark_read_back_not_recorded`) with the date it was first recorded;
* `visible_label`: files by label mode (`not_recorded` for files published before labels);
* `held` and `blocked`: generations with a `review` or `block` moderation decision in the period
  (`moderation_decisions.created_at`), in total and by category.

Every figure is an SQL aggregate (constant memory for any number of rows) over append-only or
final rows, keyed by the time the row was written: a report for a closed period gives the same
figures whenever it is run, and its `digest` (SHA-256 of the canonical figures) shows that it
did. Each report names the audit chain's head at report time (and a signed head when the
deployment's key is at hand), so that the rows it counted can later be shown unchanged.

The report is evidence towards the obligations it names. It is not a certification, an audit
opinion or a legal assessment of compliance, and it says so.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, case, func, literal, or_, select, true
from sqlalchemy.orm import Session

from provenance.ledger import Generation, Ledger, ModerationDecision, PublishedFile
from provenance.ledger.models import Client, utcnow

from .csvsafe import neutralise_row

#: Label modes in the strength order (`provenance.label.MODES`), then files without a record.
LABEL_COLUMNS = ("off", "corner", "badge", "moving", "not_recorded")
#: What the report is evidence for (never a claim of certification).
OBLIGATIONS = (
    {"obligation": "EU AI Act Art. 50(2)",
     "what": "outputs marked in a machine-readable format and detectable as artificially generated",
     "evidence": ["manifest", "watermark_read_back"]},
    {"obligation": "EU AI Act Art. 50(4)",
     "what": "deep fakes disclosed as artificially generated (a deployer's duty; the visible label supports it)",
     "evidence": ["visible_label"]},
    {"obligation": "Code of Practice on marking and labelling of AI-generated content (2026)",
     "what": "secured metadata, an imperceptible watermark, logging, and a visible label at first exposure",
     "evidence": ["manifest", "watermark_read_back", "visible_label", "audit_chain"]},
)
STATEMENT = ("Counts drawn from the Credence ledger, as evidence towards the obligations listed. This report is "
             "not a certification, an audit opinion or a legal assessment of compliance.")
READ_BACK_MISSING = ("watermark read-back at publish is not recorded by this version of the ledger (not yet "
                     "implemented: issue 22); `watermark_read_back` is null, not zero")
NO_CLIENT = "(none)"


class ComplianceError(ValueError):
    """A period or client the report cannot be made for (named in the message)."""


@dataclass(frozen=True)
class Period:
    """[since, until): either end may be open."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            moment = getattr(self, name)
            if moment is not None and moment.tzinfo is None:
                object.__setattr__(self, name, moment.replace(tzinfo=dt.UTC))
        if self.since and self.until and self.since > self.until:  # [t, t) is a valid, empty period
            raise ComplianceError(f"since ({self.since.isoformat()}) must be before until ({self.until.isoformat()})")

    def to_dict(self) -> dict[str, str | None]:
        """The period as ISO strings (null for an open end)."""
        return {"since": self.since.isoformat() if self.since else None,
                "until": self.until.isoformat() if self.until else None}


def parse_moment(text: str | None, name: str) -> dt.datetime | None:
    """An ISO date or time (`2026-12-01`, `2026-12-01T10:00:00Z`) as aware UTC; a date is its midnight."""
    if text is None or not text.strip():
        return None
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ComplianceError(f"{name} {text!r}: write an ISO date or time (2026-12-01 or 2026-12-01T10:00:00Z)"
                              ) from None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def read_back_recorded() -> bool:
    """Whether the ledger records the watermark read-back at publish (issue 22 adds the column)."""
    return "watermark_read_back" in PublishedFile.__table__.c


def _in_period(column: Any, period: Period) -> list[Any]:
    conditions = []
    if period.since is not None:
        conditions.append(column >= period.since)
    if period.until is not None:
        conditions.append(column < period.until)
    return conditions


def _resolve_client(session: Session, client: str | None) -> str | None:
    if client is None:
        return None
    found = session.scalar(select(Client.id).where(or_(Client.id == client, Client.name == client)))
    if found is None:
        raise ComplianceError(f"client {client!r}: no client has this id or name")
    return found


def _empty() -> dict[str, Any]:
    recorded = read_back_recorded()
    return {"published": 0, "manifest": 0, "watermark_read_back": 0 if recorded else None,
            "watermark_read_back_not_recorded": 0 if recorded else None,
            "visible_label": dict.fromkeys(LABEL_COLUMNS, 0),
            "held": {"total": 0, "by_category": {}}, "blocked": {"total": 0, "by_category": {}}}


def _published(session: Session, period: Period, client_id: str | None) -> list[Any]:
    """(client, label mode, files, manifest verified, read back) per client and mode: one GROUP BY."""
    pf, gen = PublishedFile.__table__.c, Generation.__table__.c
    mode = func.coalesce(pf.label_mode, literal("not_recorded"))
    if read_back_recorded():
        read_back = func.sum(case((pf.watermark_read_back == true(), 1), else_=0))
        not_recorded = func.sum(case((pf.watermark_read_back.is_(None), 1), else_=0))
    else:
        read_back = not_recorded = literal(None, Integer)
    query = (select(gen.client_id, mode, func.count(pf.id), func.sum(case((pf.manifest_verified == true(), 1),
                                                                          else_=0)), read_back, not_recorded)
             .select_from(PublishedFile.__table__.join(Generation.__table__, gen.id == pf.generation_id))
             .where(gen.status == "published", *_in_period(pf.created_at, period))
             .group_by(gen.client_id, mode))
    if client_id is not None:
        query = query.where(gen.client_id == client_id)
    return list(session.execute(query))


def _held(session: Session, period: Period, client_id: str | None) -> tuple[list[Any], list[Any]]:
    """Generations held (`review`) or blocked in the period: totals, and by category (JSON reasons)."""
    md = ModerationDecision.__table__.c
    where = [md.action.in_(("review", "block")), md.generation_id.isnot(None), *_in_period(md.created_at, period)]
    if client_id is not None:
        where.append(md.client_id == client_id)
    totals = list(session.execute(select(md.client_id, md.action, func.count(func.distinct(md.generation_id)))
                                  .where(*where).group_by(md.client_id, md.action)))
    if session.get_bind().dialect.name == "postgresql":
        reasons = case((func.json_typeof(md.reasons) == "array", md.reasons), else_=literal("[]").cast(md.reasons.type))
        each = func.json_array_elements(reasons).table_valued("value").alias("reason")
        category = each.c.value.op("->>")(literal("category"))
    else:  # SQLite's JSON1 (built in)
        each = func.json_each(md.reasons).table_valued("value", "type").alias("reason")
        category = func.json_extract(each.c.value, "$.category")
        where.append(func.json_type(md.reasons) == "array")
    by_category = list(session.execute(
        select(md.client_id, md.action, category, func.count(func.distinct(md.generation_id)))
        .select_from(ModerationDecision.__table__.join(each, true()))
        .where(*where, category.isnot(None)).group_by(md.client_id, md.action, category)))
    return totals, by_category


def compliance_report(ledger: Ledger, period: Period, client: str | None = None, *,
                      identity: Any = None) -> dict[str, Any]:
    """The report (see the module): per client and in total, with the audit chain's head.

    `identity` (the deployment's signing identity) adds a signed head; without it the head is
    reported unsigned.
    """
    from provenance.ledger.audit_chain import head, signed_head

    chain = signed_head(ledger.engine, identity) if identity is not None else {"head": head(ledger.engine)}
    with ledger.session() as s:
        client_id = _resolve_client(s, client)
        published = _published(s, period, client_id)
        totals, by_category = _held(s, period, client_id)
        seen = {r[0] for r in published} | {r[0] for r in totals}
        names = dict(s.execute(select(Client.id, Client.name).where(Client.id.in_([c for c in seen if c]))).all())
        # When the read-back began to be recorded: asked only when the period has files from before it.
        first_read_back = (s.scalar(select(func.min(PublishedFile.__table__.c.created_at)).where(
            PublishedFile.__table__.c.watermark_read_back.isnot(None)))
            if read_back_recorded() and any(r[5] for r in published) else None)
    per_client: dict[str | None, dict[str, Any]] = {}
    overall = _empty()
    for cid, mode, files, manifest, read_back, not_recorded in published:
        for target in (per_client.setdefault(cid, _empty()), overall):
            target["published"] += files
            target["manifest"] += int(manifest or 0)
            if target["watermark_read_back"] is not None:
                target["watermark_read_back"] += int(read_back or 0)
                target["watermark_read_back_not_recorded"] += int(not_recorded or 0)
            target["visible_label"][mode if mode in LABEL_COLUMNS else "not_recorded"] += files
    for cid, action, count in totals:
        key = "held" if action == "review" else "blocked"
        for target in (per_client.setdefault(cid, _empty()), overall):
            target[key]["total"] += count
    for cid, action, category, count in by_category:
        key = "held" if action == "review" else "blocked"
        for target in (per_client.setdefault(cid, _empty()), overall):
            target[key]["by_category"][category] = target[key]["by_category"].get(category, 0) + count
    clients = [{"client_id": cid, "client_name": names.get(cid, NO_CLIENT) if cid else NO_CLIENT, **figures}
               for cid, figures in sorted(per_client.items(), key=lambda kv: (kv[0] is not None, names.get(kv[0], ""),
                                                                              kv[0] or ""))]
    for item in [overall, *clients]:
        for key in ("held", "blocked"):
            item[key]["by_category"] = dict(sorted(item[key]["by_category"].items()))
    figures = {"period": period.to_dict(), "client": client_id, "totals": overall, "clients": clients}
    digest = hashlib.sha256(json.dumps(figures, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return {
        "report": "credence compliance evidence",
        "generated_at": utcnow().isoformat(),
        **figures,
        "digest": digest,
        "audit_chain": chain,
        "watermark_read_back_recorded": read_back_recorded(),
        "notes": [
            *_read_back_notes(overall, first_read_back),
            "published, manifest, watermark_read_back and visible_label count files released in the period "
            "(published_files.created_at); held and blocked count generations with a review or block decision "
            "in the period (moderation_decisions.created_at); a generation may be held and later published",
            "visible_label.not_recorded: files published before the ledger recorded labels"],
        "evidence_for": list(OBLIGATIONS),
        "statement": STATEMENT,
    }


def _read_back_notes(overall: dict[str, Any], first: Any) -> list[str]:
    """Say plainly what the read-back figure covers: nothing (not recorded), or not files from before it."""
    if not read_back_recorded():
        return [READ_BACK_MISSING]
    missing = overall["watermark_read_back_not_recorded"]
    if not missing:
        return []
    since = f"first recorded {first.isoformat()[:19]}" if first is not None else "never recorded yet"
    return [f"{missing} file(s) of the period were published before the watermark read-back was recorded "
            f"(read-back {since}); they are not counted in watermark_read_back"]


def report_csv(report: dict[str, Any]) -> str:
    """The report as CSV: one row per client and a `total` row; the period, head and digest on every row.

    Client names are neutralised against formula injection (`credence.csvsafe`).
    """
    categories = sorted({c for item in [report["totals"], *report["clients"]] for key in ("held", "blocked")
                         for c in item[key]["by_category"]})
    head = report["audit_chain"]["head"]
    columns = (["scope", "client_id", "client_name", "since", "until", "published", "manifest", "watermark_read_back",
                "watermark_read_back_not_recorded"]
               + [f"label_{m}" for m in LABEL_COLUMNS] + ["held", "blocked"]
               + [f"held_{c}" for c in categories] + [f"blocked_{c}" for c in categories]
               + ["audit_head_id", "audit_head_hash", "digest"])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    rows = [("client", item) for item in report["clients"]] + [("total", {"client_id": None, "client_name": "",
                                                                           **report["totals"]})]
    for scope, item in rows:
        period = report["period"]
        writer.writerow(neutralise_row([scope, item["client_id"] or "", item["client_name"], period["since"] or "",
                         period["until"] or "", item["published"], item["manifest"],
                         "" if item["watermark_read_back"] is None else item["watermark_read_back"],
                         "" if item["watermark_read_back_not_recorded"] is None
                         else item["watermark_read_back_not_recorded"]]
                        + [item["visible_label"][m] for m in LABEL_COLUMNS]
                        + [item["held"]["total"], item["blocked"]["total"]]
                        + [item["held"]["by_category"].get(c, 0) for c in categories]
                        + [item["blocked"]["by_category"].get(c, 0) for c in categories]
                        + [head["last_id"], head["last_hash"], report["digest"]]))
    return buffer.getvalue()
