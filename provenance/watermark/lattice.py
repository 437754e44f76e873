"""Lattice recovery: the repeated tile's period and orientation, read without the key, and folding onto it.

The lattice of the repeated tile (its period and orientation, which crops do not change and
rescaling, reframing and rotation do) is read off the autocorrelation of the whitened sum: a peak
search in two sectors (`_lattice_from_acf`), and a comb over square axis-aligned periods
(`_comb_period`: a crop then a 0.5× resize of a small frame leaves less than two tiles on the
short side). Neither uses a key, so they cost the p-value only their count; the unattacked
lattices of both tile geometries are always tried as well. Every pixel is then folded onto one
tile (`fold`, `BINS` bins per cell), so that a crop only shifts the tile cyclically.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .layout import GEOMETRIES, TILE, cell_px

BINS = 2  # fold bins per cell side
SCALE_RANGE = (0.45, 2.1)  # tile period relative to the unattacked one, searched in the autocorrelation
ANGLE_DEG = 12.0
COMB_OVERLAP = 0.2  # least overlap (share of the frame) for a lag the period comb scores


def _acf(a: torch.Tensor) -> torch.Tensor:
    """Normalised linear autocorrelation (lag 0 at [0, 0], negative lags wrapped)."""
    h, w = a.shape
    a = a - a.mean()
    spec = torch.fft.rfft2(a, s=(2 * h, 2 * w))
    acf = torch.fft.irfft2(spec.real.square() + spec.imag.square(), s=(2 * h, 2 * w))
    ys = torch.arange(2 * h, device=a.device)
    xs = torch.arange(2 * w, device=a.device)
    dy = torch.where(ys < h, ys, ys - 2 * h).abs()
    dx = torch.where(xs < w, xs, xs - 2 * w).abs()
    overlap = (h - dy).clamp_min(0)[:, None] * (w - dx).clamp_min(0)[None, :]
    return acf / overlap.clamp_min(1) / (acf[0, 0] / (h * w)).clamp_min(1e-12)


def _refine(acf: torch.Tensor, iy: int, ix: int) -> tuple[float, float]:
    """Sub-pixel peak position by a parabola through the neighbours on each axis."""
    h2, w2 = acf.shape

    def para(m: float, c: float, p: float) -> float:
        den = m - 2 * c + p
        return 0.0 if den >= 0 else max(-0.5, min(0.5, 0.5 * (m - p) / den))

    c = float(acf[iy, ix])
    oy = para(float(acf[(iy - 1) % h2, ix]), c, float(acf[(iy + 1) % h2, ix]))
    ox = para(float(acf[iy, (ix - 1) % w2]), c, float(acf[iy, (ix + 1) % w2]))
    return oy, ox


def _lag_grid(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(2 * h, device=device)
    xs = torch.arange(2 * w, device=device)
    dy = torch.where(ys < h, ys, ys - 2 * h).to(torch.float32)
    dx = torch.where(xs < w, xs, xs - 2 * w).to(torch.float32)
    return dy[:, None].expand(2 * h, 2 * w), dx[None, :].expand(2 * h, 2 * w)


def _lattice_from_acf(a: torch.Tensor, period: float) -> list[np.ndarray]:
    """Tile lattice vectors (columns: image displacement of one tile along u and v), if found."""
    h, w = a.shape
    acf = _acf(a)
    dy, dx = _lag_grid(h, w, a.device)
    radius = torch.sqrt(dy.square() + dx.square())
    overlap_ok = ((h - dy.abs()) * (w - dx.abs())) >= 0.25 * h * w
    in_ring = (radius >= SCALE_RANGE[0] * period) & (radius <= SCALE_RANGE[1] * period) & overlap_ok
    tan = math.tan(math.radians(ANGLE_DEG))
    sectors = [(dx > 0) & (dy.abs() <= tan * dx), (dy > 0) & (dx.abs() <= tan * dy)]
    vectors: list[np.ndarray | None] = []
    for sector in sectors:
        masked = torch.where(in_ring & sector, acf, torch.full_like(acf, -math.inf))
        flat = int(torch.argmax(masked))
        if not math.isfinite(float(masked.view(-1)[flat])):
            vectors.append(None)  # no lag this long fits (a short side after a crop): inferred below
            continue
        iy, ix = divmod(flat, acf.shape[1])
        peak = float(acf[iy, ix])
        # A peak at twice the true period can beat the true one: prefer the half lag if it is a peak too.
        hy, hx = round(float(dy[iy, ix]) / 2), round(float(dx[iy, ix]) / 2)
        if math.hypot(hy, hx) >= SCALE_RANGE[0] * period * 0.5:
            best_half = -math.inf
            for ddy in (-1, 0, 1):
                for ddx in (-1, 0, 1):
                    jy, jx = (hy + ddy) % acf.shape[0], (hx + ddx) % acf.shape[1]
                    if float(acf[jy, jx]) > best_half:
                        best_half, by, bx = float(acf[jy, jx]), jy, jx
            if best_half >= 0.5 * peak:
                iy, ix = by, bx
        oy, ox = _refine(acf, iy, ix)
        v = np.array([float(dx[iy, ix]) + ox, float(dy[iy, ix]) + oy])
        # Higher orders of the same lattice vector pin its length down more finely.
        num, den = v * 1.0, 1.0
        for k in (2, 3):
            ty, tx = k * v[1], k * v[0]
            if abs(ty) >= h * 0.7 or abs(tx) >= w * 0.7:
                break
            best, jy, jx = -math.inf, 0, 0
            for ddy in (-1, 0, 1):
                for ddx in (-1, 0, 1):
                    cy, cx = (round(ty) + ddy) % acf.shape[0], (round(tx) + ddx) % acf.shape[1]
                    if float(acf[cy, cx]) > best:
                        best, jy, jx = float(acf[cy, cx]), cy, cx
            if best < 0.3 * peak:
                break
            oy, ox = _refine(acf, jy, jx)
            pk = np.array([float(dx[jy, jx]) + ox, float(dy[jy, jx]) + oy])
            num, den = num + k * pk, den + k * k
        vectors.append(num / den)
    u, v = vectors
    if u is None and v is None:
        return []
    # Cells are square and platforms scale both axes alike: one vector gives the other, turned 90°.
    if u is None:
        u = np.array([v[1], -v[0]])
    if v is None:
        v = np.array([-u[1], u[0]])
    return [np.stack([u, v], axis=1)]


def _comb_period(a: torch.Tensor, periods: Sequence[float]) -> list[np.ndarray]:
    """An axis-aligned square lattice from a comb over the autocorrelation (scaling and cropping only).

    The separate peak search in `_lattice_from_acf` can lock onto the picture's own structure
    (a half or a third of the period, a texture's repeat), and it needs two tile repeats along each
    axis, which a crop then a 0.5× resize of a small frame leaves on the long side only. The
    common platform edits (rescale, crop) keep the lattice square and axis-aligned, so score every
    candidate period P by the high-passed autocorrelation at (P, 0), (0, P), (P, ±P), (2P, 0),
    (0, 2P) where the overlap is large enough, and keep the best. No key is used.
    """
    h, w = a.shape
    acf = _acf(a)
    hp = acf - F.avg_pool2d(F.pad(acf[None, None], (4, 4, 4, 4), mode="circular"), 9, stride=1)[0, 0]
    hp_np = hp.cpu().numpy().astype(np.float64)
    lo, hi = min(periods) * SCALE_RANGE[0], max(periods) * SCALE_RANGE[1]
    cand = np.arange(max(6.0, lo), hi, 0.25)
    if cand.size == 0:
        return []
    offsets = np.array([(0, 1), (1, 0), (1, 1), (1, -1), (0, 2), (2, 0)], dtype=np.float64)
    ys = cand[:, None] * offsets[None, :, 0]
    xs = cand[:, None] * offsets[None, :, 1]
    valid = (h - np.abs(ys)).clip(0) * (w - np.abs(xs)).clip(0) >= COMB_OVERLAP * h * w
    y0, x0 = np.floor(ys), np.floor(xs)
    fy, fx = ys - y0, xs - x0
    y0, x0 = y0.astype(np.int64), x0.astype(np.int64)
    H, W = hp_np.shape

    def g(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        return hp_np[yy % H, xx % W]

    vals = ((1 - fy) * (1 - fx) * g(y0, x0) + (1 - fy) * fx * g(y0, x0 + 1)
            + fy * (1 - fx) * g(y0 + 1, x0) + fy * fx * g(y0 + 1, x0 + 1))
    count = valid.sum(axis=1)
    score = np.where(count > 0, (vals * valid).sum(axis=1) / np.sqrt(count.clip(1)), -np.inf)
    best = int(np.argmax(score))
    if not np.isfinite(score[best]) or score[best] <= 0:
        return []
    period = float(cand[best])
    if 0 < best < cand.size - 1 and np.isfinite(score[best - 1]) and np.isfinite(score[best + 1]):
        den = score[best - 1] - 2 * score[best] + score[best + 1]
        if den < 0:
            period += 0.25 * max(-0.5, min(0.5, 0.5 * (score[best - 1] - score[best + 1]) / den))
    return [np.array([[period, 0.0], [0.0, period]])]


@lru_cache(maxsize=16)
def _fold_bins(h: int, w: int, lattice: bytes, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """For a frame shape and lattice: each pixel's bin on the folded tile, and each bin's pixel count."""
    n = TILE * BINS
    lat = np.frombuffer(lattice, dtype=np.float64).reshape(2, 2)
    inv = torch.from_numpy(np.linalg.inv(lat / TILE)).to(device, torch.float64)
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float64) + 0.5,
                            torch.arange(w, device=device, dtype=torch.float64) + 0.5, indexing="ij")
    u = inv[0, 0] * xs + inv[0, 1] * ys
    v = inv[1, 0] * xs + inv[1, 1] * ys
    bu = torch.floor(u * BINS).to(torch.int64) % n
    bv = torch.floor(v * BINS).to(torch.int64) % n
    idx = (bv * n + bu).view(-1)
    counts = torch.bincount(idx, minlength=n * n).to(torch.float64)
    return idx, counts


def fold(a: torch.Tensor, lattice: np.ndarray) -> torch.Tensor:
    """Average every pixel onto one tile, TILE·BINS bins a side, under this lattice."""
    h, w = a.shape
    n = TILE * BINS
    idx, counts = _fold_bins(h, w, np.ascontiguousarray(lattice, dtype=np.float64).tobytes(), str(a.device))
    sums = torch.bincount(idx, weights=a.reshape(-1).to(torch.float64), minlength=n * n)
    folded = torch.where(counts > 0, sums / counts.clamp_min(1), torch.zeros_like(sums))
    return folded.view(n, n).to(torch.float32)


def _aligned_fold(frames: Sequence[torch.Tensor], lattice: np.ndarray) -> torch.Tensor:
    """Sum of per-frame folds, each cyclically shifted onto the running sum (no key involved).

    After a strong re-encode the mark in predicted frames is the reference frame's mark carried
    along by the motion vectors, so it drifts with a pan until the next key frame; aligning the
    folded tiles frame to frame follows it. The alignment looks only at the data, so the sync
    statistic's p-value bound still holds.
    """
    n = TILE * BINS
    total: torch.Tensor | None = None
    shift = (0, 0)
    reach = 6
    offsets = torch.arange(-reach, reach + 1, device=frames[0].device)
    for frame in frames:
        g = fold(frame, lattice)
        if total is None:
            total = g
            continue
        xc = torch.fft.irfft2(torch.conj(torch.fft.rfft2(total)) * torch.fft.rfft2(g), s=(n, n))
        rows = (shift[0] + offsets) % n
        cols = (shift[1] + offsets) % n
        local = xc[rows][:, cols]
        k = int(torch.argmax(local))
        shift = (int(rows[k // len(offsets)]), int(cols[k % len(offsets)]))
        total = total + torch.roll(g, shifts=(-shift[0], -shift[1]), dims=(0, 1))
    assert total is not None
    return total


def matched_filter(folded: torch.Tensor) -> torch.Tensor:
    """Convolve with the cell's tent (the bilinear pattern's own shape), circularly."""
    k1 = torch.tensor([0.5, 1.0, 0.5], device=folded.device)
    kernel = (k1[:, None] * k1[None, :])[None, None]
    padded = F.pad(folded[None, None], (1, 1, 1, 1), mode="circular")
    return F.conv2d(padded, kernel)[0, 0]


def _candidate_lattices(total: torch.Tensor, frame_size: tuple[int, int]) -> list[np.ndarray]:
    """Every lattice to fold under: each tile geometry's unattacked one, and what the autocorrelation finds.

    Both geometries are always tried, so clips marked with v1's smaller cells (before the adaptive
    period) still decode; the lattice search around each expected period uses no key either.
    """
    scale = total.shape[0] / frame_size[0]
    lattices: list[np.ndarray] = []

    def add(lat: np.ndarray) -> None:
        if abs(np.linalg.det(lat)) > 1e-3 and not any(np.allclose(lat, x, atol=0.15) for x in lattices):
            lattices.append(lat)

    periods = [TILE * cell_px(*frame_size, geometry) * scale for geometry in GEOMETRIES]
    for period in periods:
        add(np.array([[period, 0.0], [0.0, period]]))
    searched: list[np.ndarray] = []
    for period in sorted(set(round(p, 3) for p in periods)):
        for lat in _lattice_from_acf(total, period):
            if not any(np.allclose(lat, x, atol=0.15) for x in searched):
                searched.append(lat)
    for lat in _comb_period(total, periods):
        if not any(np.allclose(lat, x, atol=0.15) for x in searched):
            searched.append(lat)
    for lat in searched:
        add(lat)
    return lattices


def key_free_variants(total: torch.Tensor, frame_size: tuple[int, int],
                      kept: Sequence[torch.Tensor] = ()) -> tuple[list[torch.Tensor], int]:
    """Everything detection does before it looks at a key: the folded tiles, and the shifts tested per key.

    Returns the matched-filtered folds (per lattice, plain and frame-aligned, each also mirrored)
    and the number of (variant, cyclic shift) tests one key makes on them: the union bound's count.
    """
    lattices = _candidate_lattices(total, frame_size)
    n = TILE * BINS
    folds = 2 if len(kept) > 1 else 1
    variants = []
    for lattice, aligned in itertools.product(lattices, (False, True)[:folds]):
        g = matched_filter(_aligned_fold(kept, lattice) if aligned else fold(total, lattice))
        variants += [g, torch.roll(g.flip(1), 1, dims=1)]
    return variants, len(variants) * n * n
