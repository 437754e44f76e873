"""Watermark windows on the timeline (issue 24): cut to the fingerprint's seconds, never into foreign footage."""

from __future__ import annotations

import detector
from detector.segments import timeline


def window(start: float, end: float, generation: str) -> dict:
    return {"start_s": start, "end_s": end, "generation_id": generation, "detected": True, "p_value": 1e-20}


def test_windows_confirm_the_fingerprint_and_do_not_stretch_it() -> None:
    """A (0-2 s), foreign (2-4 s), B (4-7 s): the 1.75-3.5 s window read A's last frames."""
    fp = detector.Evidence("fingerprint", "gB", "generated", 0.95, {"spans": [
        {"start_s": 4.25, "end_s": 6.75, "generation_id": "gB", "clip_start_s": 0.0, "clip_end_s": 3.0, "speed": 1.0},
        {"start_s": 0.25, "end_s": 1.75, "generation_id": "gA", "clip_start_s": 0.0, "clip_end_s": 2.0, "speed": 1.0}]})
    wm = detector.Evidence("watermark", "gA", "generated", 0.999, {"windows": [
        window(0.0, 1.75, "gA"), window(1.75, 3.5, "gA"), window(3.5, 5.25, "gB"), window(5.25, 7.0, "gB")]})
    segments = timeline([fp, wm], 7.0)
    placed = [(s["generation_id"], s["start_s"], s["end_s"]) for s in segments]
    assert placed == [("gA", 0.25, 1.75), ("gB", 4.25, 6.75)]
    assert all(sorted(s["sources"]) == ["fingerprint", "watermark"] for s in segments)


def test_a_window_the_fingerprint_missed_stands_on_its_own() -> None:
    """A part of our clip the fingerprint did not place (far from its span) keeps the window's seconds."""
    fp = detector.Evidence("fingerprint", "gA", "generated", 0.95, {"spans": [
        {"start_s": 0.0, "end_s": 2.0, "generation_id": "gA", "clip_start_s": 0.0, "clip_end_s": 2.0, "speed": 1.0}]})
    wm = detector.Evidence("watermark", "gA", "generated", 0.999, {"windows": [window(0.0, 2.0, "gA"),
                                                                             window(8.0, 10.0, "gA")]})
    segments = timeline([fp, wm], 10.0)
    assert [(s["start_s"], s["end_s"]) for s in segments] == [(0.0, 2.0), (8.0, 10.0)]
    assert segments[1]["sources"] == ["watermark"]
    # Alone, the watermark's windows are the timeline.
    assert [(s["start_s"], s["end_s"]) for s in timeline([wm], 10.0)] == [(0.0, 2.0), (8.0, 10.0)]
