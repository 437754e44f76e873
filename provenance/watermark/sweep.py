"""Keyed scale sweep: find a tile whose period no autocorrelation can show (a reframed, rescaled clip).

A 9:16 reframe of a 16:9 clip keeps a third of its width, and the platform then scales it to
720×1280: a 360p clip's tile (its whole short side) becomes 1280 px tall and wider than the frame,
so the picture holds less than one tile and the autocorrelation (`lattice`) has no repeat to see.
The sync cells still are there; what is unknown is the scale (the crop's offset is a cyclic shift,
which the sync correlation already searches). So fold the frame at every period of a fixed
geometric grid and let the key's sync correlation pick: `scale_folds` gives the folds, the
caller scores them like any other lattice.

Folding an axis-aligned square lattice is separable: each row of the frame goes to one row bin,
each column to one column bin, so a fold is two small matrix products (well under a millisecond at
the working size) and a few hundred scales cost a fraction of a second. The grid is fixed by the
working frame's size alone, before any key or pixel is looked at, so the p-value pays for it with
a plain count (`sweep_tests`); the sweep runs only when the ordinary lattices found nothing, but
its tests are counted always, so the bound is the same whichever path a clip takes. The fold's
origin is the frame's centre, so a period error misplaces cells by at most `SLIP_CELLS` at the
frame's edges; the grid's step is set by that.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from .layout import GEOMETRY, TILE, cell_px

BINS = 2  # fold bins per cell side, as `lattice.BINS`
#: Tile periods swept, relative to the default geometry's unattacked period at this frame size: a
#: 360p clip reframed to 9:16 and scaled to 720x1280 lands at 2.5x, a crop then a 0.5x resize near 0.9x.
SWEEP_RANGE = (0.4, 3.0)
#: Most a cell may slip (in cells) at the frame's edge between two neighbouring periods of the grid.
SLIP_CELLS = 0.35
MIN_PERIOD = 40.0  # working pixels: a tile below this (a cell under ~1.3 px) carries nothing readable


@lru_cache(maxsize=32)
def sweep_periods(work_h: int, work_w: int, frame_h: int, frame_w: int) -> tuple[float, ...]:
    """The periods (working pixels) the sweep folds at: fixed by the sizes alone.

    A step from P to P(1+d) moves a cell at distance E from the centre by E·d/P tiles, i.e.
    TILE·E·d/P cells: d = SLIP_CELLS·P/(TILE·E) keeps that under `SLIP_CELLS`.
    """
    base = TILE * cell_px(frame_h, frame_w, GEOMETRY) * work_h / frame_h
    reach = max(work_h, work_w) / 2.0
    lo = max(MIN_PERIOD, SWEEP_RANGE[0] * base)
    hi = max(lo, SWEEP_RANGE[1] * base)
    periods = []
    p = lo
    while p <= hi:
        periods.append(p)
        p *= 1.0 + SLIP_CELLS / (TILE * reach) * p
    return tuple(periods)


def sweep_tests(work_h: int, work_w: int, frame_h: int, frame_w: int) -> int:
    """How many (fold, cyclic shift) tests the sweep makes per key: its term in the union bound."""
    n = TILE * BINS
    return len(sweep_periods(work_h, work_w, frame_h, frame_w)) * n * n


def _binning(size: int, period: float, device: torch.device) -> torch.Tensor:
    """size × (TILE·BINS) one-hot matrix: which bin each row (or column) falls in, origin at the centre."""
    n = TILE * BINS
    pos = (torch.arange(size, device=device, dtype=torch.float64) + 0.5 - size / 2.0) / period * n
    idx = torch.floor(pos).to(torch.int64) % n
    out = torch.zeros(size, n, device=device, dtype=torch.float32)
    out[torch.arange(size, device=device), idx] = 1.0
    return out


def scale_folds(total: torch.Tensor, frame_size: tuple[int, int]) -> torch.Tensor:
    """The accumulated whitened frame folded at every sweep period: (periods, TILE·BINS, TILE·BINS).

    Bins no pixel reached are 0 (a tile wider than the frame leaves columns unseen: erasures).
    """
    h, w = total.shape
    a = total.to(torch.float32)
    folds = []
    for period in sweep_periods(h, w, *frame_size):
        rows = _binning(h, period, a.device)
        cols = _binning(w, period, a.device)
        sums = rows.T @ a @ cols
        counts = rows.sum(0)[:, None] * cols.sum(0)[None, :]
        folds.append(torch.where(counts > 0, sums / counts.clamp_min(1.0), torch.zeros_like(sums)))
    if not folds:
        return torch.zeros(0, TILE * BINS, TILE * BINS, device=a.device)
    return torch.stack(folds)


def scale_of(period: float, frame_size: tuple[int, int], work_h: int) -> float:
    """The scale a sweep period stands for, relative to the default geometry's unattacked tile."""
    base = TILE * cell_px(*frame_size, GEOMETRY) * work_h / frame_size[0]
    return period / base if base > 0 else math.nan


__all__ = ["SWEEP_RANGE", "scale_folds", "scale_of", "sweep_periods", "sweep_tests"]

