"""The evidence interface: every signal that can say "we made this clip" is one `EvidenceSource`.

A new signal (a second watermark, an embedding match) is one new module implementing
`inspect`; the verdict logic in `detector.verdict` combines whatever sources are configured.

Two rules every source follows through the helpers below, because a verdict is only as honest
as what the ledger could confirm:

* A source that names a generation asks the ledger whether it was released (`claim`): a clip
  whose generation is not `published` (a publish killed halfway, a held or failed generation)
  is reported as `unreleased`, never as `generated`.
* A source that needed the ledger and could not ask it reports `unchecked` ("ledger
  unavailable"), never `absent`: an outage must not turn into "we did not make this".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from provenance.errors import LedgerError
from provenance.ledger import Generation, Ledger

#: What a context knows about its ledger: "ok" (it answered when the context was built),
#: "absent" (none was ever initialised: before `credence init`, C2PA alone decides) or
#: "unavailable" (one is configured but could not be reached or read: an outage).
LedgerState = Literal["ok", "absent", "unavailable"]

#: The only status whose clips were released; every other status (queued, running, review,
#: blocked, rejected, failed, cancelled, legacy pending) means the ledger never let the clip out.
RELEASED = "published"

#: Errors that mean "the ledger could not be asked" (the ledger's own, and the driver's).
LEDGER_ERRORS: tuple[type[BaseException], ...] = (LedgerError, SQLAlchemyError)

#: The reason every source and verdict gives for an outage; it names no host, user or driver.
LEDGER_UNAVAILABLE = "ledger unavailable"


class LedgerUnavailable(LedgerError):
    """The ledger is configured but cannot be asked right now (the HTTP layer's 503).

    Its message is written for clients: it never carries the driver's text, which names the
    database's host, port, user and sometimes the password.
    """

    def __init__(self, message: str = "the ledger is unavailable; try again shortly") -> None:
        super().__init__(message)


@dataclass(frozen=True)
class VerificationContext:
    """What the sources may consult: the ledger, our trust anchors and signers, our keys.

    `ledger` is None when there is no ledger to ask; `ledger_state` says why (never initialised,
    or unreachable), because the two call for different answers.
    """

    ledger: Ledger | None
    trust_pem: str
    our_signers: frozenset[str]
    watermark_keys: tuple[Any, ...] = ()
    ledger_state: LedgerState = "ok"

    def __post_init__(self) -> None:
        if self.ledger is None and self.ledger_state == "ok":
            object.__setattr__(self, "ledger_state", "absent")

    def generation_status(self, generation_id: str) -> str | None:
        """The ledger status of `generation_id` (None when unknown); raises `LEDGER_ERRORS`."""
        if self.ledger is None:
            raise LedgerUnavailable()
        with self.ledger.session() as s:
            return s.scalar(select(Generation.status).where(Generation.id == generation_id))


@dataclass
class Evidence:
    """One source's finding: does it point at one of our generations, and how strongly."""

    source: str
    generation_id: str | None
    #: "generated" (points at a released generation of ours), "weak" (a partial match),
    #: "unreleased" (points at a generation of ours the ledger never released), "unchecked"
    #: (the ledger was needed and could not be asked), "tampered" (a signal of ours that fails
    #: checks), "ours_unknown", "ambiguous", "absent" (nothing of ours found), "foreign" (valid
    #: provenance from someone else) or "error" (see `detector.verdict`).
    finding: str
    strength: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The evidence item of a verdict: the source's own figures, keyed by name."""
        return {"source": self.source, **self.details}


class EvidenceSource(Protocol):
    """A signal that inspects a clip."""

    name: str

    def inspect(self, path: Path, context: VerificationContext) -> Evidence: ...


def unchecked(source: str, details: dict[str, Any], generation_id: str | None = None) -> Evidence:
    """Evidence of a source that needed the ledger and could not ask it: never a clearance."""
    details.update(ledger="unavailable", reason=LEDGER_UNAVAILABLE)
    return Evidence(source, generation_id, "unchecked", 0.0, details)


def unreleased_reason(generation_id: str, status: str | None) -> str:
    """Why a clip naming `generation_id` is not ours to vouch for."""
    if status is None:
        return f"generation {generation_id} is not in the ledger"
    return f"generation {generation_id} was never released (status {status})"


_ASK = object()


def claim(source: str, generation_id: str, strength: float, details: dict[str, Any],
          context: VerificationContext, status: str | object | None = _ASK) -> Evidence:
    """Evidence that names `generation_id`, once the ledger confirms that it was released.

    `status` is the generation's status when the caller already read it; otherwise the ledger
    is asked. Without any ledger (before `credence init`) a claim stands on the signal alone,
    and the evidence says that the release was not checked.
    """
    if context.ledger is None:
        if context.ledger_state == "unavailable":
            return unchecked(source, details, generation_id)
        details["release"] = "not checked: no ledger is initialised"
        return Evidence(source, generation_id, "generated", strength, details)
    if status is _ASK:
        try:
            status = context.generation_status(generation_id)
        except LEDGER_ERRORS:
            return unchecked(source, details, generation_id)
    if status != RELEASED:
        details["reason"] = unreleased_reason(generation_id, status if isinstance(status, str) else None)
        details["status"] = status
        return Evidence(source, generation_id, "unreleased", strength, details)
    return Evidence(source, generation_id, "generated", strength, details)
