"""Per-window read-out of the mark: which seconds of an upload carry which payload.

The whole-clip read (`detect`) answers "is our mark here, and which clip": it sums look windows
until one decodes a payload, so in a compilation of two of our clips it names one of them. A
timeline needs each part to name its own generation, so this module reads the mark again over
short windows that tile the upload (`PER_WINDOW_S` seconds each, at most `MAX_WINDOWS` of them),
each window summed on its own and analysed once (`windows.Looks`, one look each).

The p-value stays a valid bound. Each window's analysis is one more test of "not marked with
this key", so every window is analysed as one of `len(plan)` looks (the Bonferroni factor the
detector already uses for its own looks): a window's reported p includes that factor, and the
chance that *any* window of an unmarked clip reports p <= a is at most a. The plan (how many
windows, where) is fixed by the clip's duration alone before any frame is read, as `looks_for`
fixes the detector's looks.

Memory stays bounded: a window takes at most `FRAMES_PER_WINDOW` frames, so it holds its sum and
at most 4 whitened frames for the aligned fold (about 2.5 MB at 16:9): a 30 s clip's 15 windows
about 35 MB, the most windows (`MAX_WINDOWS`) about 140 MB. Nothing here
decodes: the caller (the detector's shared decode, or `read_windows` on a frame sequence) feeds
working-size luma.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ._threads import one_thread
from .embed import MIN_SIDE
from .layout import WatermarkKey
from .statistics import work_size
from .windows import Looks

#: Seconds one window spans: about the shortest part of a compilation a timeline must place.
PER_WINDOW_S = 2.0
#: Windows a clip is cut into, at most (each one more test in the bound; memory grows with them).
MAX_WINDOWS = 60
#: Frames one window sums, at most, spread evenly over it (the aligned fold keeps every 4th).
FRAMES_PER_WINDOW = 16


@dataclass(frozen=True)
class WindowRead:
    """One window's reading: its seconds, whether the mark is there, and the payload it decodes."""

    start_s: float
    end_s: float
    detected: bool
    p_value: float
    payload: int | None
    frames: int

    def to_dict(self) -> dict[str, object]:
        """The JSON form (payload as 16 hex digits, like the whole-clip read's)."""
        return {"start_s": round(self.start_s, 2), "end_s": round(self.end_s, 2), "detected": self.detected,
                "p_value": self.p_value, "payload": None if self.payload is None else f"{self.payload:016x}",
                "frames": self.frames}


def window_plan(duration_s: float | None) -> list[tuple[float, float]]:
    """The windows (start, end) a clip of `duration_s` seconds is read in, fixed before any frame.

    Windows of `PER_WINDOW_S` tile the clip (the last one ends with it); a long clip gets
    `MAX_WINDOWS` longer ones. An unknown duration gets none: no bound could be fixed in advance.
    """
    if duration_s is None or not math.isfinite(duration_s) or duration_s <= 0:
        return []
    count = max(1, min(MAX_WINDOWS, math.ceil(duration_s / PER_WINDOW_S - 1e-6)))
    span = duration_s / count
    return [(k * span, (k + 1) * span) for k in range(count)]


class WindowReads:
    """Accumulates working-size luma into per-window sums and analyses each window once.

    `wants(t)` says whether a frame shown at `t` is taken (at most `FRAMES_PER_WINDOW` a window);
    `add` whitens it into its window's sum (`windows.Looks`' accumulator, as the detector's own
    looks: a plain mean of the raw luma read the second window of a 4 s SD clip after CRF 35 in
    1 of 3 tries where this read all 3); `read` analyses every window that holds frames. The
    analysis is the expensive part (a lattice search per window), so a caller may call `read`
    only when the whole-clip read found the mark: a negative upload then costs the whitening.
    """

    def __init__(self, keys: Sequence[WatermarkKey], duration_s: float | None, fps: float,
                 device: str | torch.device = "cpu") -> None:
        self.keys = list(keys)
        self.plan = window_plan(duration_s)
        self.device = torch.device(device)
        self._looks = [Looks(self.keys, self.device, len(self.plan)) for _ in self.plan]
        self._last: list[float] = [-math.inf] * len(self.plan)
        self._gap = [max((end - start) / FRAMES_PER_WINDOW, 0.5 / max(fps, 1e-3)) for start, end in self.plan]

    def _window(self, t: float) -> int | None:
        if not self.plan or t < 0 or t >= self.plan[-1][1] + 1e-6:
            return None
        span = self.plan[0][1] - self.plan[0][0]
        return min(len(self.plan) - 1, int(t / span)) if span > 0 else 0

    def wants(self, t: float) -> bool:
        """Whether the frame shown at `t` seconds is one this reader takes."""
        k = self._window(t)
        return k is not None and t - self._last[k] >= self._gap[k] - 1e-6

    def claim(self, t: float) -> None:
        """Record that the frame shown at `t` is taken, before `add` has it (a reader that adds later)."""
        k = self._window(t)
        if k is not None:
            self._last[k] = max(self._last[k], t)

    def add(self, t: float, luma: np.ndarray, size: tuple[int, int], white: torch.Tensor | None = None) -> None:
        """Take working-size luma (`statistics.work_size` of `size`) of the frame shown at `t`.

        `white`: the same frame already whitened (what `windows._Accumulator.add_luma` returned) by a reader
        that feeds its whole-clip looks too, so that it is whitened once.
        """
        k = self._window(t)
        if k is None or min(size) < MIN_SIDE:
            return
        self._last[k] = max(self._last[k], t)
        acc = self._looks[k].acc
        if white is not None:
            acc.add_white(white, size)
        else:
            acc.add_luma(torch.from_numpy(np.asarray(luma, dtype=np.float32)), size)

    def read(self) -> list[WindowRead]:
        """Analyse every window that holds frames; each p counts len(plan) looks."""
        out: list[WindowRead] = []
        with one_thread(self.device):
            for (start, end), looks in zip(self.plan, self._looks, strict=True):
                looks.analyse()
                res = looks.result
                if res is None:
                    continue  # no frame fell in this window
                out.append(WindowRead(start, end, bool(res.detected), float(res.p_value),
                                      None if res.payload is None else int(res.payload), looks.acc.frames))
        return out


def luma_of(frame: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """An RGB uint8 frame as working-size luma (what the detector whitens), and its size."""
    h, w = frame.shape[:2]
    t = torch.from_numpy(np.ascontiguousarray(frame[..., :3])).to(torch.float32)
    luma = t[..., 0] * 0.299 + t[..., 1] * 0.587 + t[..., 2] * 0.114
    hw, ww = work_size(h, w)
    if (hw, ww) != (h, w):
        luma = F.interpolate(luma[None, None], size=(hw, ww), mode="area")[0, 0]
    return luma.numpy(), (h, w)


def read_windows(frames: Sequence[np.ndarray], keys: Sequence[WatermarkKey], fps: float) -> list[WindowRead]:
    """Per-window readings of a frame sequence (RGB uint8) shown at `fps`: the windows of its duration."""
    reads = WindowReads(keys, len(frames) / fps if fps > 0 else None, fps)
    for index, frame in enumerate(frames):
        t = index / fps
        if reads.wants(t):
            luma, size = luma_of(frame)
            reads.add(t, luma, size)
    return reads.read()
