"""What a verified clip discloses: its visible label, and whether its machine-readable marks were found.

EU AI Act Art. 50 asks that AI-generated video be marked (machine-readable) and, for deep fakes,
disclosed (visible). A verifier answering "did Credence make this?" can also say what the clip
disclosed: the visible label recorded for it — from the manifest we signed when it is still
there, else from the ledger record of the generation the verdict names (a re-encode drops the
manifest but not the label burned into the frames) — and whether the manifest and the
watermark were found in this copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from provenance.errors import ProvenanceError

from .evidence import LEDGER_ERRORS, Evidence, VerificationContext

#: Watermark findings in which our mark was found in the clip (whether or not it names a clip).
MARK_FOUND = frozenset({"generated", "unreleased", "ours_unknown", "tampered", "unchecked"})


def _label_from_manifest(evidence: Sequence[Evidence]) -> dict[str, Any] | None:
    for item in evidence:
        if item.source == "c2pa" and item.details.get("ours"):
            disclosure = item.details.get("disclosure") or {}
            label = disclosure.get("visible_label")
            if isinstance(label, dict):
                return {"mode": label.get("mode"), "text": label.get("text"), "position": label.get("position")}
    return None


def _label_from_ledger(context: VerificationContext, generation_id: str | None) -> dict[str, Any] | None:
    if generation_id is None or context.ledger is None:
        return None
    try:
        gen = context.ledger.get_generation(generation_id)
    except (ProvenanceError, *LEDGER_ERRORS):
        return None
    if gen is None or gen.status != "published":
        return None
    for record in gen.files:
        if record.label_mode is not None:
            return {"mode": record.label_mode, "text": record.label_text, "position": None}
    return None


def describe(evidence: Sequence[Evidence], verdict: str, generation_id: str | None,
             context: VerificationContext) -> dict[str, Any]:
    """The `disclosure` block of a verdict: the label recorded, where it was read, what was found."""
    manifest_found = any(e.source == "c2pa" and e.details.get("present") and e.details.get("ours") for e in evidence)
    mark_found = any(e.source == "watermark" and e.finding in MARK_FOUND and e.details.get("detected")
                     for e in evidence)
    label, source = _label_from_manifest(evidence), "manifest"
    if label is None and verdict == "generated":
        label, source = _label_from_ledger(context, generation_id), "ledger"
    return {"label": label, "label_source": source if label is not None else None,
            "manifest_found": manifest_found, "mark_found": mark_found}
