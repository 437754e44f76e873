"""Segment timelines: which seconds of an upload match which published clip, and by which source.

An upload is often a compilation: a few seconds of one of our clips between other footage. The
verdict names one generation (the best-supported); the timeline lists every span of the upload
that a source ties to a published generation, with the seconds of that generation's clip it
matched, so a person can see that 0-4 s is clip A, 4-9 s is nobody's and 9-12 s is clip B.

What each source contributes:

* fingerprint: each strong match (`detector.fingerprint_source.is_strong`) under its own
  alignment hypothesis, with the upload's and the published clip's seconds it covers;
* watermark: per-window payloads (`details["windows"]`, each `{"start_s", "end_s",
  "generation_id"}`, read by `provenance.watermark.per_window` over 2 s windows), each cut to
  the fingerprint's span of its generation where the two overlap (`_snap_windows`); otherwise,
  when it names a generation, it confirms the fingerprint's spans of that generation, or, with
  none, places one span over the whole upload (the mark is read over windows of the whole clip);
* c2pa: one span over the whole upload (a manifest binds the whole file).

Only sources whose finding is `generated` or `unreleased` place spans (a weak or ambiguous
fingerprint never draws a segment: a timeline is a claim too). Spans of one generation that
overlap or touch are merged, and list every source that placed them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from provenance.errors import ProvenanceError
from provenance.video import open_video

from .evidence import Evidence

#: Spans of one generation closer than this (seconds) are one segment.
JOIN_GAP_S = 0.5

#: Findings whose source may place a span on the timeline.
PLACING = frozenset({"generated", "unreleased"})


def _whole(item: Evidence) -> bool:
    """Whether the source's span is the whole upload only because it cannot say which seconds."""
    return item.source == "watermark" and not (item.details or {}).get("windows")


def _spans(item: Evidence, duration_s: float | None) -> list[dict[str, Any]]:
    """The (start, end, generation, clip offsets) spans one source's evidence places."""
    details = item.details or {}
    if item.source == "fingerprint":
        # Every strong span the source reported, including those of other generations (a montage).
        return [dict(s) for s in details.get("spans", []) if s.get("generation_id")]
    if item.finding not in PLACING or not item.generation_id:
        return []
    windows = details.get("windows")
    if item.source == "watermark" and windows:
        return [{"start_s": float(w["start_s"]), "end_s": float(w["end_s"]), "generation_id": w["generation_id"]}
                for w in windows if w.get("generation_id")]
    if duration_s is None:
        return []
    return [{"start_s": 0.0, "end_s": float(duration_s), "generation_id": item.generation_id}]


def _snap_windows(raw: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """Watermark windows cut to the fingerprint's spans of their generation where they overlap.

    A watermark window is coarse (2 s): one that straddles the end of our clip reads its mark
    from the part that is ours. Where the fingerprint placed the same generation over those
    seconds (to a quarter second), the window confirms that span rather than stretching it
    into the foreign footage (a window that only touches such a span is dropped: it read the
    clip's last frames); a window the fingerprint has no span of its generation near stands on
    its own (a part the fingerprint missed).
    """
    fingerprint: dict[str, list[dict[str, Any]]] = {}
    for source, span in raw:
        if source == "fingerprint":
            fingerprint.setdefault(span["generation_id"], []).append(span)
    out: list[tuple[str, dict[str, Any]]] = []
    for source, span in raw:
        spans = fingerprint.get(span["generation_id"], []) if source == "watermark" else []
        cuts = [(max(span["start_s"], f["start_s"]), min(span["end_s"], f["end_s"])) for f in spans]
        cuts = [(a, b) for a, b in cuts if b > a]
        if cuts:
            out += [(source, {**span, "start_s": a, "end_s": b}) for a, b in cuts]
            continue
        length = span["end_s"] - span["start_s"]
        if any(span["start_s"] - f["end_s"] < length and f["start_s"] - span["end_s"] < length for f in spans):
            # Next to the fingerprint's span of its generation but not over it: the window read the
            # last (or first) frames of our clip and is otherwise the footage beside it.
            continue
        out.append((source, span))
    return out


def timeline(evidence: Sequence[Evidence], duration_s: float | None) -> list[dict[str, Any]]:
    """Every span of the upload tied to a published generation, in time order (merged per generation).

    Each segment: `start_s`, `end_s` (seconds of the upload), `generation_id`, `sources` (which
    sources place it) and, where a fingerprint aligned it, `clip_start_s` / `clip_end_s` (the
    published clip's seconds) and `speed`.
    """
    raw: list[tuple[str, dict[str, Any]]] = []
    for item in evidence:
        for span in _spans(item, duration_s):
            raw.append((item.source, span))
    # A whole-upload watermark span (no per-window payloads) confirms the fingerprint's spans of
    # its generation rather than painting the whole upload: in a montage the rest is not ours.
    placed = {(span["generation_id"]) for source, span in raw if source == "fingerprint"}
    for item in evidence:
        if _whole(item) and item.generation_id in placed:
            raw = [(source, span) for source, span in raw
                   if not (source == item.source and span["generation_id"] == item.generation_id)]
            raw += [(item.source, dict(span)) for source, span in raw
                    if source == "fingerprint" and span["generation_id"] == item.generation_id]
    raw = _snap_windows(raw)
    raw.sort(key=lambda r: (r[1]["generation_id"], r[1]["start_s"]))
    merged: list[dict[str, Any]] = []
    for source, span in raw:
        last = merged[-1] if merged else None
        if (last is not None and last["generation_id"] == span["generation_id"]
                and span["start_s"] <= last["end_s"] + JOIN_GAP_S):
            last["end_s"] = max(last["end_s"], span["end_s"])
            if source not in last["sources"]:
                last["sources"].append(source)
            for key in ("clip_start_s", "clip_end_s", "speed"):
                if key in span and key not in last:
                    last[key] = span[key]
            if "clip_start_s" in span and "clip_start_s" in last:
                last["clip_start_s"] = min(last["clip_start_s"], span["clip_start_s"])
                last["clip_end_s"] = max(last["clip_end_s"], span["clip_end_s"])
            continue
        segment = {"start_s": span["start_s"], "end_s": span["end_s"], "generation_id": span["generation_id"],
                   "sources": [source]}
        for key in ("clip_start_s", "clip_end_s", "speed"):
            if key in span:
                segment[key] = span[key]
        merged.append(segment)
    if duration_s is not None:
        for segment in merged:
            segment["end_s"] = min(segment["end_s"], float(duration_s))
    for segment in merged:
        for key in ("start_s", "end_s", "clip_start_s", "clip_end_s"):
            if key in segment:
                segment[key] = round(float(segment[key]), 2)
    merged.sort(key=lambda s: (s["start_s"], s["end_s"]))
    return merged


def upload_seconds(path: Path) -> float | None:
    """The upload's length from its header (None when the header does not say or cannot be read)."""
    try:
        container = open_video(path)
    except ProvenanceError:
        return None
    try:
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        return container.duration / 1_000_000 if container.duration is not None else None
    finally:
        container.close()
