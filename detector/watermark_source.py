"""Watermark evidence: our keyed invisible mark, its p-value, its payload, and whose mark id it is.

The watermark package (`provenance.watermark`) may be absent from an installation; then this
source reports `available: false` and the other sources decide alone.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from .evidence import Evidence, VerificationContext

#: A detection accuses only below this p-value (the chance that an unmarked clip scores as well).
MAX_P_VALUE = 1e-6


def watermark_available() -> bool:
    """Whether the watermark package is installed."""
    return importlib.util.find_spec("provenance.watermark") is not None


class WatermarkSource:
    """Decodes the keyed watermark and maps its payload (the 64-bit mark id) to a generation."""

    name = "watermark"

    def inspect(self, path: Path, context: VerificationContext) -> Evidence:
        """Evidence from the watermark (survives re-encoding and the loss of the manifest)."""
        details: dict[str, Any] = {"available": False, "detected": False, "p_value": None, "payload": None,
                                   "key_id": None, "generation_id": None}
        if not watermark_available() or not context.watermark_keys:
            return Evidence(self.name, None, "absent", 0.0, details)
        from provenance.watermark import detect_watermark_file

        result = detect_watermark_file(path, list(context.watermark_keys))
        p_value = None if result.p_value is None else float(result.p_value)
        details.update(available=True, detected=bool(result.detected), p_value=p_value,
                       payload=None if result.payload is None else f"{int(result.payload):016x}",
                       key_id=getattr(result, "key_id", None))
        confident = bool(result.detected) and p_value is not None and p_value <= MAX_P_VALUE
        if not confident:
            return Evidence(self.name, None, "absent", 0.0, details)
        strength = max(0.0, min(0.999999, 1.0 - p_value))
        if result.payload is None:
            # Our key's mark is there but its payload did not decode: ours, but not which clip.
            return Evidence(self.name, None, "ours_unknown", strength, details)
        generation = context.ledger.find_by_mark(int(result.payload)) if context.ledger is not None else None
        if generation is None:
            # A mark made with our key that carries an id we never issued: forged or damaged.
            details["reason"] = "payload is not a mark id in the ledger"
            return Evidence(self.name, None, "tampered", strength, details)
        details["generation_id"] = generation.id
        return Evidence(self.name, generation.id, "generated", strength, details)
