"""The review queue: what is held, and a reviewer's approve or reject, under the policy's review rules.

A held prompt's generation waits in `review` (stage `prompt`): approving moves it to `queued` and
the job runs (the approval stands in for the prompt decision; the output is still screened).
A held output's generation waits in `review` (stage `output`) with its frames in quarantine:
approving moves it to `running` under this process's lease and publishes exactly those frames
(watermark, C2PA, fingerprints, ledger) as any other clip. Rejecting ends either as `rejected`
with a user-facing reason. Each decision is a `review` decision row (the reviewer's client and
key, the note, the time) and an audit entry, in the same unit of work as the move.

The policy file's optional `review:` section says who may approve what:

    review:
      never_approvable: [sexual_minors]   # every `switchable: false` category is always here
      two_reviewers: [violence]           # approval needs two different reviewers
"""

from __future__ import annotations

import datetime as dt
import getpass
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Text, cast, select

from provenance.errors import ProvenanceError
from provenance.ledger import Generation, ModerationDecision, StateConflict, states
from provenance.ledger.models import utcnow
from provenance.publish import PublishRequest
from provenance.quarantine import Quarantine, QuarantineMissing

from .generation.hold import quarantine_for
from .generation.jobs import notify_if_final, output_path, run_job
from .generation.options import publish_request
from .generation.protocols import ModeratorFor
from .reviewers import PastApproval, check_approver, repeated_reviewer
from .runtime import ModeratorCache, Runtime
from .timestamps import aware, iso

__all__ = ["ReviewError", "ReviewNotFound", "ReviewOutcome", "ReviewRefused", "ReviewRules", "Reviewer", "approve",
           "expire_held_outputs", "list_held", "quarantine_for", "reject", "rules_for", "show"]

class ReviewError(ProvenanceError):
    """A review action that cannot be carried out (unknown id, not held); the message says why."""


class ReviewNotFound(ReviewError):
    """No held generation with that id."""


class ReviewRefused(ReviewError):
    """The policy forbids this action (a never-approvable category, the same reviewer twice)."""


@dataclass(frozen=True)
class Reviewer:
    """Who decides: the audit log's actor name, the person (`name`) and, over HTTP, the client and key.

    Approvals count people (`credence.reviewers`): a key names its holder (`keys create --reviewer`);
    a key that names nobody may reject but not approve.
    """

    actor: str
    client_id: str | None = None
    key_id: str | None = None
    name: str | None = None

    @classmethod
    def from_caller(cls, caller: Any) -> Reviewer:
        """The reviewer behind an authenticated API caller (`credence.auth.Caller`)."""
        return cls(caller.actor, caller.client_id, caller.key_id, caller.reviewer)

    @classmethod
    def local(cls, name: str | None = None) -> Reviewer:
        """A reviewer at the command line (`--as NAME`, else the operating-system user)."""
        person = name or getpass.getuser()
        return cls(f"cli:{person}", name=person)


@dataclass(frozen=True)
class ReviewRules:
    """The policy's review rules."""

    never_approvable: frozenset[str] = frozenset({"sexual_minors"})
    two_reviewers: frozenset[str] = frozenset()
    user_messages: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_policy_file(cls, path: Path | None) -> ReviewRules:
        """Read `review:` from the policy (the packaged one when None); every non-switchable category
        is never approvable whatever the file says."""
        from moderation.policy import PolicyError, default_policy_path, load_policy

        path = Path(path) if path is not None else default_policy_path()
        policy = load_policy(path)  # validated as the moderator sees it
        data = yaml.safe_load(path.read_bytes()) or {}
        section = data.get("review") or {}
        if not isinstance(section, dict):
            raise PolicyError(f"policy {path}: review: must be a mapping")
        unknown = set(section) - {"never_approvable", "two_reviewers"}
        if unknown:
            raise PolicyError(f"policy {path}: review.{sorted(unknown)[0]}: unknown field")
        lists: dict[str, frozenset[str]] = {}
        for key in ("never_approvable", "two_reviewers"):
            items = section.get(key) or []
            if not isinstance(items, list):
                raise PolicyError(f"policy {path}: review.{key}: must be a list of category names")
            for i, name in enumerate(items):
                if name not in policy.categories:
                    raise PolicyError(f"policy {path}: review.{key}[{i}]: unknown category {name!r}")
            lists[key] = frozenset(items)
        never = lists["never_approvable"] | {c.name for c in policy.categories.values() if not c.switchable}
        return cls(never, lists["two_reviewers"], {c.name: c.user_message for c in policy.categories.values()})


def rules_for(runtime: Runtime) -> ReviewRules:
    """The review rules of the deployment's policy."""
    return ReviewRules.from_policy_file(runtime.settings.policy_path)


# -- reading the queue -----------------------------------------------------------------------------
def _held_decision(decisions: list[ModerationDecision], stage: str | None) -> ModerationDecision | None:
    """The screen's decision that put the generation in review (the latest at its stage)."""
    held = [d for d in decisions if d.stage == stage and d.action in ("review", "block")]
    return held[-1] if held else None


def _categories(decision: ModerationDecision | None) -> list[str]:
    if decision is None:
        return []
    return list(dict.fromkeys(r.get("category") for r in decision.reasons or [] if isinstance(r, dict)
                              and r.get("category")))


def _approvals(decisions: list[ModerationDecision], since: dt.datetime | None) -> list[ModerationDecision]:
    """Approvals given while the generation has been in its current hold."""
    out = [d for d in decisions if d.stage == "review" and d.action == "approve"]
    if since is not None:
        out = [d for d in out if aware(d.created_at) >= aware(since)]
    return out


def _item(runtime: Runtime, gen: Generation, decisions: list[ModerationDecision], rules: ReviewRules,
          quarantine: Quarantine) -> dict[str, Any]:
    held = _held_decision(decisions, gen.stage if gen.status == "review" else None)
    if held is None:
        held = next((d for d in reversed(decisions) if d.stage in ("prompt", "output") and d.action != "allow"), None)
    categories = _categories(held)
    approvals = _approvals(decisions, held.created_at if held else None) if gen.status == "review" else []
    item: dict[str, Any] = {
        "id": gen.id, "status": gen.status, "stage": gen.stage, "client_id": gen.client_id, "key_id": gen.key_id,
        "created_at": iso(gen.created_at), "updated_at": iso(gen.updated_at), "model": gen.model,
        "policy_version": gen.policy_version, "categories": categories,
        "reasons": held.reasons if held else [], "held_action": held.action if held else None,
        "held_at": iso(held.created_at) if held else None,
        "never_approvable": sorted(set(categories) & rules.never_approvable),
        "reviewers_needed": 2 if set(categories) & rules.two_reviewers else 1,
        "approvals": [{"actor": (d.reasons or [{}])[0].get("reviewer"), "key_id": d.key_id, "client_id": d.client_id,
                       "reviewer": (d.reasons or [{}])[0].get("reviewer_name"),
                       "at": iso(d.created_at)} for d in approvals],
        "failure_reason": gen.failure_reason,
    }
    if gen.stage == "output" and gen.status == "review":
        try:
            info = quarantine.info(gen.id)
            item["quarantine"] = {"frames": info.frames, "fps": info.fps, "width": info.width, "height": info.height,
                                  "expires_at": info.expires_at.isoformat(), "expired": info.expired}
        except QuarantineMissing:
            item["quarantine"] = None
    return item


def expire_held_outputs(runtime: Runtime) -> list[str]:
    """Reject held outputs whose time in quarantine has run out, and delete their frames."""
    quarantine = quarantine_for(runtime)
    done = []
    for generation_id in quarantine.expired():
        try:
            with runtime.ledger.session() as s:
                states.move(s, generation_id, ("review",), "rejected",
                            failure_reason="The generated video was not released: its review period ended.")
                runtime.ledger.audit(s, runtime.actor, "review.expired", generation_id)
        except StateConflict:
            pass  # decided meanwhile, or not held any more: only the files go
        quarantine.remove(generation_id)
        done.append(generation_id)
    return done


def list_held(runtime: Runtime, *, stage: str | None = None, category: str | None = None, limit: int = 100,
              after: str | None = None) -> list[dict[str, Any]]:
    """Generations held for review, oldest first (`after`: the last id of the previous page)."""
    if stage not in (None, "prompt", "output"):
        raise ReviewError(f"stage must be prompt or output, got {stage!r}")
    expire_held_outputs(runtime)
    rules, quarantine = rules_for(runtime), quarantine_for(runtime)
    with runtime.ledger.session() as s:
        query = select(Generation).where(Generation.status == "review")
        if stage:
            query = query.where(Generation.stage == stage)
        if category:
            from sqlalchemy import exists

            query = query.where(exists(select(ModerationDecision.id).where(
                ModerationDecision.generation_id == Generation.id,
                ModerationDecision.action.in_(("review", "block")),
                cast(ModerationDecision.reasons, Text).like(f'%"category": "{category}"%'))))
        if after:
            anchor = s.get(Generation, after)
            if anchor is not None:
                query = query.where((Generation.created_at > anchor.created_at)
                                    | ((Generation.created_at == anchor.created_at) & (Generation.id > anchor.id)))
        rows = list(s.scalars(query.order_by(Generation.created_at, Generation.id).limit(limit)))
        decisions = _decisions_by_generation(s, [g.id for g in rows])
        return [_item(runtime, g, decisions.get(g.id, []), rules, quarantine) for g in rows]


def _decisions_by_generation(session: Any, ids: list[str]) -> dict[str, list[ModerationDecision]]:
    out: dict[str, list[ModerationDecision]] = {}
    if ids:
        for d in session.scalars(select(ModerationDecision).where(ModerationDecision.generation_id.in_(ids))
                                 .order_by(ModerationDecision.id)):
            out.setdefault(d.generation_id, []).append(d)
    return out


def show(runtime: Runtime, generation_id: str) -> dict[str, Any]:
    """One generation as a reviewer sees it: status, reasons, prompt, every decision, the audit trail."""
    from provenance.ledger import AuditEntry

    rules, quarantine = rules_for(runtime), quarantine_for(runtime)
    with runtime.ledger.session() as s:
        gen = s.get(Generation, generation_id)
        if gen is None:
            raise ReviewNotFound(f"no generation {generation_id[:100]!r}")
        decisions = _decisions_by_generation(s, [gen.id]).get(gen.id, [])
        item = _item(runtime, gen, decisions, rules, quarantine)
        item["prompt"] = gen.prompt
        item["prompt_sha256"] = gen.prompt_sha256
        item["mark_id"] = gen.mark_hex
        item["seed"] = gen.seed
        item["decisions"] = [{"id": d.id, "stage": d.stage, "action": d.action, "reasons": d.reasons,
                              "scores": d.scores, "policy_version": d.policy_version, "client_id": d.client_id,
                              "key_id": d.key_id, "created_at": iso(d.created_at)} for d in decisions]
        item["files"] = [{"sha256": f.sha256, "size_bytes": f.size_bytes, "manifest_label": f.manifest_label,
                          "mime_type": f.mime_type, "path": f.path} for f in gen.files]
        item["audit"] = [{"id": a.id, "at": iso(a.at), "actor": a.actor, "action": a.action, "details": a.details,
                          "key_id": a.key_id} for a in s.scalars(select(AuditEntry).where(
                              AuditEntry.subject == gen.id).order_by(AuditEntry.id))]
    return item


# -- deciding ----------------------------------------------------------------------------------------
@dataclass
class ReviewOutcome:
    """What a review action did: the status the generation ended in (or still has) and why."""

    generation_id: str
    action: str  # "approve" | "reject"
    status: str
    detail: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"id": self.generation_id, "action": self.action, "status": self.status, "detail": self.detail,
                **self.extra}


def _load_held(session: Any, generation_id: str) -> tuple[Generation, list[ModerationDecision]]:
    gen = session.get(Generation, generation_id, populate_existing=True)
    if gen is None:
        raise ReviewNotFound(f"no generation {generation_id[:100]!r}")
    if gen.status != "review":
        raise ReviewError(f"generation {generation_id} is {gen.status}, not held for review")
    return gen, _decisions_by_generation(session, [gen.id]).get(gen.id, [])


def _record(runtime: Runtime, session: Any, gen: Generation, held: ModerationDecision | None, reviewer: Reviewer,
            action: str, note: str, **details: Any) -> None:
    session.add(ModerationDecision(
        generation_id=gen.id, stage="review", prompt_sha256=gen.prompt_sha256, action=action,
        scores={}, reasons=[{"note": note, "reviewer": reviewer.actor, "reviewer_name": reviewer.name,
                             "held_stage": gen.stage, **details}],
        policy_version=held.policy_version if held else (gen.policy_version or "unknown"),
        policy_hash=held.policy_hash if held else None, client_id=reviewer.client_id, key_id=reviewer.key_id))
    runtime.ledger.audit(session, reviewer.actor, f"review.{action}", gen.id, client_id=reviewer.client_id,
                         key_id=reviewer.key_id, reviewer=reviewer.name, note=note, stage=gen.stage, **details)


def _check_note(note: str) -> str:
    note = (note or "").strip()
    if not note:
        raise ReviewError("a note is required: say why")
    if len(note) > 2000:
        raise ReviewError("the note is longer than 2000 characters")
    return note


def reject(runtime: Runtime, generation_id: str, reviewer: Reviewer, note: str) -> ReviewOutcome:
    """End a held generation as `rejected`; the client sees a user-facing reason, never the note."""
    note = _check_note(note)
    rules = rules_for(runtime)
    with runtime.ledger.session() as s:
        gen, decisions = _load_held(s, generation_id)
        held = _held_decision(decisions, gen.stage)
        categories = _categories(held)
        if gen.stage == "output":
            reason = "The generated video was not released after review."
        else:
            reason = next((rules.user_messages[c] for c in categories if c in rules.user_messages),
                          "Your request was refused after review.")
        stage = gen.stage
        # The row first, the audit entry last: every writer takes locks in that order (no deadlock).
        states.move(s, gen.id, ("review",), "rejected", failure_reason=reason)
        _record(runtime, s, gen, held, reviewer, "reject", note)
    if stage == "output":
        quarantine_for(runtime).remove(generation_id)
    _notify(runtime, generation_id)
    return ReviewOutcome(generation_id, "reject", "rejected", f"rejected; the client is told: {reason}")


def approve(runtime: Runtime, generation_id: str, reviewer: Reviewer, note: str, *,
            moderator_for: ModeratorFor | None = None, enqueue: Callable[[str], None] | None = None) -> ReviewOutcome:
    """Approve a held generation (see the module). With two reviewers required, the first approval is
    recorded and the generation stays held; the second, by another reviewer, releases it.

    A held prompt is then queued: `enqueue(id)` when a queue engine runs jobs, else the job runs here
    to its end (`moderator_for` screens its output). A held output is published here.
    """
    note = _check_note(note)
    rules = rules_for(runtime)
    quarantine = quarantine_for(runtime)
    with runtime.ledger.session() as s:
        gen, _ = _load_held(s, generation_id)
        # A compare-and-set onto itself takes the row's lock until commit: two reviewers approving at
        # once are counted one after the other (neither can miss the other's approval).
        states.move(s, gen.id, ("review",), "review", stage=gen.stage)
        gen, decisions = _load_held(s, generation_id)
        held = _held_decision(decisions, gen.stage)
        categories = set(_categories(held))
        # Who, before what: a client's own request, or a key naming no person, is refused (403) whatever it is.
        check_approver(reviewer.name, reviewer.client_id, generation_id, gen.client_id)
        forbidden = sorted(categories & rules.never_approvable)
        if forbidden:
            raise ReviewRefused(f"generation {generation_id} was held for {', '.join(forbidden)}, which the policy "
                                "never allows anyone to approve; reject it")
        stage = gen.stage
        if stage == "output":
            try:
                info = quarantine.info(generation_id)
            except QuarantineMissing:
                raise ReviewError(f"generation {generation_id}: the held video is no longer in quarantine; "
                                  "reject it") from None
            if info.expired:
                raise ReviewError(f"generation {generation_id}: the held video's review period ended")
        needed = 2 if categories & rules.two_reviewers else 1
        given = _approvals(decisions, held.created_at if held else None)
        repeated = repeated_reviewer(reviewer.name, reviewer.key_id, [PastApproval.from_decision(d) for d in given])
        if repeated:
            raise ReviewRefused(f"generation {generation_id}: {repeated}; the policy needs {needed} different "
                                "reviewers (different people, with different keys)")
        if len(given) + 1 < needed:
            _record(runtime, s, gen, held, reviewer, "approve", note, approvals=len(given) + 1, needed=needed)
            return ReviewOutcome(generation_id, "approve", "review",
                                 f"approval 1 of {needed} recorded; another reviewer must approve it")
        publisher = runtime.publisher
        if stage == "prompt":
            states.move(s, gen.id, ("review",), "queued")
        else:
            states.move(s, gen.id, ("review",), "running", stage="publishing", lease_owner=publisher.owner,
                        lease_expires_at=states.lease_deadline(publisher.lease_seconds), started_at=utcnow())
        _record(runtime, s, gen, held, reviewer, "approve", note, approvals=len(given) + 1, needed=needed)
        request = publish_request(gen)
    if stage == "prompt":
        if enqueue is not None:
            enqueue(generation_id)
            return ReviewOutcome(generation_id, "approve", "queued", "approved; the job is queued")
        status = run_job(runtime, moderator_for or ModeratorCache(runtime), generation_id)
        return ReviewOutcome(generation_id, "approve", status, f"approved; the job ran and ended {status}")
    return _publish_held_output(runtime, generation_id, request, quarantine)


def _publish_held_output(runtime: Runtime, generation_id: str, request: PublishRequest,
                         quarantine: Quarantine) -> ReviewOutcome:
    """Publish exactly the quarantined frames of an approved output (the row is `running` under our lease)."""
    frames, fps = quarantine.load(generation_id)
    settings = runtime.settings
    settings.outputs_dir.mkdir(parents=True, exist_ok=True)
    published = runtime.publisher.publish(generation_id, frames, fps, output_path(runtime, generation_id),
                                          request, overwrite=True)
    quarantine.remove(generation_id)
    _notify(runtime, generation_id)
    return ReviewOutcome(generation_id, "approve", "published", "approved; the held video was published",
                         extra={"mark_id": published.mark_hex, "sha256": published.sha256})


def _notify(runtime: Runtime, generation_id: str) -> None:
    try:
        notify_if_final(runtime, generation_id)
    except Exception:
        pass
