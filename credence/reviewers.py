"""Reviewers are people: who may approve a held generation, and when two approvals are two people.

Why (issue 21): two keys of one reviewer client counted as two reviewers, so one party met the
two-reviewer rule alone; and a client holding `generate,review` approved its own held request.

The rules, checked inside the approval's unit of work (with the generation's row locked):

- An approval names a person. A review key carries its holder's name (`credence keys create
  CLIENT --scopes review --reviewer NAME`, set by the operator, not by the client); a key that
  names nobody may reject but not approve (403, saying how to name one). At the command line
  the reviewer is `--as NAME`, else the operating-system user.
- A client never approves its own held request, whatever its scopes (403). It may reject it:
  that only withdraws what it asked for, which cancelling would do too.
- Where the policy needs two reviewers, the approvals must come from two different people
  (names compared without case or extra spaces) and two different keys. Two keys of one client
  count as two reviewers only when the operator named two different people on them.

Each approval records the reviewer's name, client and key (the decision row and the audit entry).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from provenance.errors import ProvenanceError

#: How the rules tell a client that has no name for its reviewer what to do.
NAME_A_REVIEWER = ("ask the operator for a review key that names its holder "
                   "(`credence keys create CLIENT --scopes review --reviewer NAME`)")


class ApprovalForbidden(ProvenanceError):
    """This caller may not approve this generation at all (403): its own request, or no named person."""


@dataclass(frozen=True)
class PastApproval:
    """An approval already given during the current hold: who, with which key, for which client."""

    name: str | None
    key_id: str | None
    client_id: str | None

    @classmethod
    def from_decision(cls, decision: Any) -> PastApproval:
        """From a `review`/`approve` decision row (rows written before reviewers had names name the actor)."""
        first = (decision.reasons or [{}])[0]
        reason = first if isinstance(first, dict) else {}
        return cls(reason.get("reviewer_name") or reason.get("reviewer"), decision.key_id, decision.client_id)


def same_person(a: str | None, b: str | None) -> bool:
    """Whether two reviewer names are one person's: compared without case and extra spaces."""
    if a is None or b is None:
        return False
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def check_approver(name: str | None, client_id: str | None, generation_id: str, requester: str | None) -> None:
    """Refuse (`ApprovalForbidden`) an approver who names no person, or whose client made the request."""
    if not name:
        raise ApprovalForbidden(f"generation {generation_id}: this key names no reviewer, and an approval must name "
                                f"the person who gives it; {NAME_A_REVIEWER}")
    if client_id is not None and requester is not None and client_id == requester:
        raise ApprovalForbidden(f"generation {generation_id} was requested by this key's own client, and a client "
                                "never approves its own held request; a reviewer of another client must decide it "
                                "(rejecting it, which withdraws the request, is allowed)")


def repeated_reviewer(name: str | None, key_id: str | None, given: Iterable[PastApproval]) -> str | None:
    """Why this approval would not be a different reviewer's (same person, or same key), or None."""
    for past in given:
        if same_person(name, past.name):
            return f"{past.name} already approved it"
        if key_id is not None and key_id == past.key_id:
            return "this key already approved it"
    return None


__all__ = ["ApprovalForbidden", "PastApproval", "check_approver", "repeated_reviewer", "same_person"]
