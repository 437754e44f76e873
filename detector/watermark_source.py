"""Watermark evidence: our keyed invisible mark, its p-value, its payload, and whose mark id it is.

The watermark always ships with Credence (every published clip carries it), so this source is
always on; it is quiet only where there are no watermark keys yet (before `credence init`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .evidence import LEDGER_ERRORS, RELEASED, Evidence, VerificationContext, claim, unchecked

if TYPE_CHECKING:
    from .shared_decode import SharedRead

#: A detection accuses only below this p-value (the chance that an unmarked clip scores as well).
MAX_P_VALUE = 1e-6


class WatermarkSource:
    """Decodes the keyed watermark and maps its payload (the 64-bit mark id) to a generation."""

    name = "watermark"

    def inspect(self, path: Path, context: VerificationContext) -> Evidence:
        """Evidence from the watermark (survives re-encoding and the loss of the manifest)."""
        details: dict[str, Any] = {"available": bool(context.watermark_keys), "detected": False, "p_value": None,
                                   "payload": None, "key_id": None, "generation_id": None, "read_back": None}
        if not context.watermark_keys:
            details["reason"] = "no watermark key is configured (run `credence init`)"
            return Evidence(self.name, None, "absent", 0.0, details)
        # One decode (`shared_decode`), without the fingerprint: the whole-clip read and, when
        # the mark is there, the per-window reads. It loads torch only here, which `credence
        # moderate` and the app's start-up should not wait for.
        from .shared_decode import read_upload

        read = read_upload(path, list(context.watermark_keys), fingerprint=False)
        return self.judge(read.watermark, read.windows, context)

    def inspect_read(self, path: Path, context: VerificationContext, read: SharedRead) -> Evidence:
        """Evidence from the watermark reads of the verification's shared decode (`detector.verify`)."""
        if not context.watermark_keys or read.watermark is None:
            return self.inspect(path, context)
        return self.judge(read.watermark, read.windows, context)

    def judge(self, result: Any, windows: list[Any] | None, context: VerificationContext) -> Evidence:
        """Evidence from a whole-clip read and, when the mark was found, its per-window reads."""
        details: dict[str, Any] = {"available": True, "detected": False, "p_value": None,
                                   "payload": None, "key_id": None, "generation_id": None, "read_back": None}
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
        try:
            details["read_back"] = _read_back(context, generation.id)
            details["windows"] = _windows(context, windows or [], int(result.payload), generation.id)
        except LEDGER_ERRORS:
            details["read_back"] = None
        return claim(self.name, generation.id, strength, details, context, status=generation.status)


def _read_back(context: VerificationContext, generation_id: str) -> dict[str, Any] | None:
    """What publishing recorded when it read this generation's mark back (issue 22), else None.

    None for files published before the read-back existed (and for hand-marked clips, which are
    not read back): the evidence then says nothing either way. A recorded read-back always passed
    (publishing refuses a clip whose mark does not read), so `passed` is there for the record.
    """
    assert context.ledger is not None
    generation = context.ledger.get_generation(generation_id)
    files = [f for f in (generation.files if generation is not None else []) if f.watermark_read_back is not None]
    if not files:
        return None
    row = files[-1]
    return {"passed": bool(row.watermark_read_back), "p_value": row.watermark_read_back_p,
            "margin": row.watermark_read_back_margin, "headroom_db": row.watermark_read_back_headroom_db}


def _windows(context: VerificationContext, reads: list[Any], payload: int, generation_id: str) -> list[dict[str, Any]]:
    """The per-window reads (`provenance.watermark.per_window`) that name a released generation.

    Each window's payload is looked up on its own, so the part of a compilation that carries
    another of our clips names its own generation; a window whose mark did not decode, or whose
    payload the ledger does not hold as a released generation, names none (the timeline draws
    nothing for it). Each window's p-value already counts every window of the clip.
    """
    assert context.ledger is not None
    names: dict[int, str | None] = {payload: generation_id}
    out: list[dict[str, Any]] = []
    for read in reads:
        if not read.detected or read.payload is None or read.p_value > MAX_P_VALUE:
            continue
        if read.payload not in names:
            found = context.ledger.find_by_mark(int(read.payload))
            names[read.payload] = found.id if found is not None and found.status == RELEASED else None
        if names[read.payload] is not None:
            out.append({**read.to_dict(), "generation_id": names[read.payload]})
    return out
