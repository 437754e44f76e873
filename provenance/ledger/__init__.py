"""The ledger: every generation, decision, published file, key and audit entry."""

from . import states
from .models import (
    FINAL_STATUSES,
    GENERATION_STATUSES,
    STAGES,
    TRANSITIONS,
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
from .states import StateConflict
from .store import Ledger, prompt_digest

__all__ = [
    "FINAL_STATUSES",
    "GENERATION_STATUSES",
    "STAGES",
    "TRANSITIONS",
    "AppendOnlyViolation",
    "AuditEntry",
    "Base",
    "Generation",
    "KeyRecord",
    "Ledger",
    "ModerationDecision",
    "PublishedFile",
    "StateConflict",
    "mark_from_db",
    "mark_to_db",
    "new_generation_id",
    "new_mark_id",
    "prompt_digest",
    "states",
]
