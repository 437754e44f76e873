"""Watermark evidence: our keyed invisible mark, its p-value, its payload, and whose mark id it is.

The watermark always ships with Credence (every published clip carries it), so this source is
always on; it is quiet only where there are no watermark keys yet (before `credence init`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .evidence import LEDGER_ERRORS, Evidence, VerificationContext, claim, unchecked

#: A detection accuses only below this p-value (the chance that an unmarked clip scores as well).
MAX_P_VALUE = 1e-6


class WatermarkSource:
    """Decodes the keyed watermark and maps its payload (the 64-bit mark id) to a generation."""

    name = "watermark"

    def inspect(self, path: Path, context: VerificationContext) -> Evidence:
        """Evidence from the watermark (survives re-encoding and the loss of the manifest)."""
        details: dict[str, Any] = {"available": bool(context.watermark_keys), "detected": False, "p_value": None,
                                   "payload": None, "key_id": None, "generation_id": None}
        if not context.watermark_keys:
            details["reason"] = "no watermark key is configured (run `credence init`)"
            return Evidence(self.name, None, "absent", 0.0, details)
        # Imported here, not at the top: it loads torch, which `credence moderate` and the app's
        # start-up should not wait for. The watermark always ships; a broken install fails here, loudly.
        from provenance.watermark import detect_watermark_file

        result = detect_watermark_file(path, list(context.watermark_keys))
        p_value = None if result.p_value is None else float(result.p_value)
        details.update(detected=bool(result.detected), p_value=p_value,
                       payload=None if result.payload is None else f"{int(result.payload):016x}",
                       key_id=getattr(result, "key_id", None))
        confident = bool(result.detected) and p_value is not None and p_value <= MAX_P_VALUE
        if not confident:
            return Evidence(self.name, None, "absent", 0.0, details)
        strength = max(0.0, min(0.999999, 1.0 - p_value))  # type: ignore[operator]
        if result.payload is None:
            # Our key's mark is there but its payload did not decode: ours, but not which clip.
            return Evidence(self.name, None, "ours_unknown", strength, details)
        if context.ledger is None:
            if context.ledger_state == "unavailable":
                return unchecked(self.name, details)
            # No ledger was ever initialised: the payload cannot be looked up, which is not a forgery.
            details["reason"] = "no ledger is initialised to look the payload up in"
            return Evidence(self.name, None, "ours_unknown", strength, details)
        try:
            generation = context.ledger.find_by_mark(int(result.payload))
        except LEDGER_ERRORS:
            return unchecked(self.name, details)
        if generation is None:
            # A mark made with our key that carries an id we never issued: forged or damaged.
            details["reason"] = "payload is not a mark id in the ledger"
            return Evidence(self.name, None, "tampered", strength, details)
        details["generation_id"] = generation.id
        return claim(self.name, generation.id, strength, details, context, status=generation.status)
