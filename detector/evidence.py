"""The evidence interface: every signal that can say "we made this clip" is one `EvidenceSource`.

A new signal (a second watermark, an embedding match) is one new module implementing
`inspect`; the verdict logic in `detector.verdict` combines whatever sources are configured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from provenance.ledger import Ledger


@dataclass(frozen=True)
class VerificationContext:
    """What the sources may consult: the ledger, our trust anchors and signers, our keys."""

    ledger: Ledger | None
    trust_pem: str
    our_signers: frozenset[str]
    watermark_keys: tuple[Any, ...] = ()


@dataclass
class Evidence:
    """One source's finding: does it point at one of our generations, and how strongly."""

    source: str
    generation_id: str | None
    #: "generated" (points at our generation), "tampered" (a signal of ours that fails checks),
    #: "absent" (nothing of ours found) or "foreign" (valid provenance from someone else).
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
