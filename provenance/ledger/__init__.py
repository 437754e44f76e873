"""The ledger: every generation, decision, published file, key and audit entry."""

from .models import (
    GENERATION_STATUSES,
    AppendOnlyViolation,
    AuditEntry,
    Base,
    Generation,
    KeyRecord,
    ModerationDecision,
    PublishedFile,
    mark_from_db,
    mark_to_db,
    new_generation_id,
    new_mark_id,
)
from .store import Ledger, prompt_digest

__all__ = [
    "GENERATION_STATUSES",
    "AppendOnlyViolation",
    "AuditEntry",
    "Base",
    "Generation",
    "KeyRecord",
    "Ledger",
    "ModerationDecision",
    "PublishedFile",
    "mark_from_db",
    "mark_to_db",
    "new_generation_id",
    "new_mark_id",
    "prompt_digest",
]
