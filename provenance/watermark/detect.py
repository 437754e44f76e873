"""Detection: average whitened luma over frames, find the tile lattice, fold, correlate, decode.

0. Looks: the clip is read in windows (`WINDOW_S` seconds, `MAX_FRAMES` frames each) spread over
   its whole length, at most `MAX_LOOKS` of them, their number fixed by the duration alone before
   any frame is read (`looks_for`). Windows accumulate; after each one the sum is analysed, and
   reading stops at the first look that detects the mark and decodes its payload. A later window
   starts at a key frame when one lies ahead (no decoding in between), so reading every look
   costs at most one pass over the clip.
1. Each sampled frame is reduced to luma at a working size (short side `WORK_SHORT`), whitened
   (minus a local mean, divided by local activity, clipped, then weighted toward quiet regions)
   so that image content does not swamp the mark, and added to one running sum: memory is one
   working-size image (plus the first `MAX_FRAMES` whitened frames for the aligned fold).
2. The lattice of the repeated tile (its period and orientation, which crops do not change and
   rescaling, reframing and rotation do) is read off the autocorrelation of that sum: a peak
   search in two sectors, and a comb over square axis-aligned periods (a crop then a 0.5× resize
   of a small frame leaves less than two tiles on the short side). Neither uses a key, so they
   cost the p-value only their count; the unattacked lattices of both tile geometries (v1's
   smaller cells, v2's adaptive ones: `layout.cell_px`) are always tried as well.
3. For each lattice, every pixel is folded onto one tile (2 bins per cell); a crop only shifts
   the tile cyclically, so the keyed sync cells are correlated at every cyclic shift at once by
   FFT, also mirrored (a flipped clip).
4. p-value: for a fixed shift, the sync statistic z = Σ s_k g_k / ||g|| is a sum of the key's
   independent random signs s_k weighted by numbers that do not depend on the key, so under "not
   marked with this key" P(z ≥ t) ≤ exp(-t²/2) (Hoeffding), whatever the content. A union bound
   over every shift, mirror, lattice, key and look gives p = min(1, M·exp(-z²/2)): analytic and
   conservative, with no assumption about the video, and valid whichever look the reading stops at.
5. At the best shift, each cell's value is read (inverting the small blur that the bilinear
   pattern and the matched filter add), the cells of each channel bit are summed with their
   keyed signs, and the soft bits go to the Viterbi decoder; a payload is reported only when its
   CRC-32 checks.

`detected` is p < `DETECTION_P` (1e-6). A detection without a payload means "marked with our key,
but too damaged to say which clip"; a payload is never reported without a detection.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import av
import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidVideo
from ..video import _open
from . import ecc
from ._threads import one_thread as _one_thread
from .embed import MIN_SIDE
from .layout import GEOMETRIES, TILE, WatermarkKey, cell_px, layout_for

DETECTION_P = 1e-6
WORK_SHORT = 256
BINS = 2  # fold bins per cell side
WINDOW_S = 3.0  # seconds of video one look reads
MAX_FRAMES = 24  # frames one look uses, spread over its window
MAX_LOOKS = 4  # windows a long clip is sampled in, at most (each one more look: a factor in the bound)
LOOK_MIN_SPAN = 1.5  # a clip shorter than this many windows gets one look (its first window)
SCALE_RANGE = (0.45, 2.1)  # tile period relative to the unattacked one, searched in the autocorrelation
ANGLE_DEG = 12.0
WHITEN_CELLS = 1.5
WHITEN_POWER = 0.5
WHITEN_REF = 1.0
COMB_OVERLAP = 0.2  # least overlap (share of the frame) for a lag the period comb scores


@dataclass
class WatermarkResult:
    """What the detector found with the best-matching key."""

    detected: bool
    p_value: float
    payload: int | None
    key_id: str | None
    z_score: float = 0.0
    bit_agreement: float | None = None  # share of channel bits agreeing with the decoded codeword
    frames_used: int = 0
    reason: str | None = None
    soft_bits: np.ndarray | None = field(default=None, repr=False)  # channel soft values, best key

    @property
    def payload_hex(self) -> str | None:
        """The payload as 16 hex digits."""
        return None if self.payload is None else f"{self.payload:016x}"

    def to_dict(self) -> dict[str, object]:
        """The CLI/JSON form."""
        return {"detected": self.detected, "p_value": self.p_value, "payload": self.payload_hex,
                "key_id": self.key_id if self.detected else None}


# -- accumulation ------------------------------------------------------------------------------
def _work_size(height: int, width: int) -> tuple[int, int]:
    scale = min(1.0, WORK_SHORT / min(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _whiten(luma: torch.Tensor, cell: float) -> torch.Tensor:
    """High-passed, activity-normalised, clipped luma: the mark survives, the picture mostly not.

    The local mean spans about two cells, so it removes the picture's slow variations and keeps
    most of the mark's energy (which sits at the cell scale) whatever the working cell size. The
    result is then divided by the local activity to the power `WHITEN_POWER` as well: a busy
    region's whitened values are mostly picture, a quiet region's mostly mark, so quiet regions
    count for more. Box filters through OpenCV (the same replicate borders, 10× faster than torch).
    """
    y = luma.detach().to("cpu", torch.float32).numpy()
    k = max(5, 2 * round(cell * WHITEN_CELLS / 2) + 1)
    r = y - cv2.blur(y, (k, k), borderType=cv2.BORDER_REPLICATE)
    act1 = cv2.blur(np.abs(r), (9, 9), borderType=cv2.BORDER_REPLICATE) + 1.0
    white = np.clip(r / act1, -3.0, 3.0)
    if WHITEN_POWER:
        white = white / act1**WHITEN_POWER * (1.0 + WHITEN_REF) ** WHITEN_POWER
    return torch.from_numpy(np.ascontiguousarray(white, dtype=np.float32)).to(luma.device)


class _Accumulator:
    """Whitened working-size luma of the sampled frames (at most `MAX_FRAMES`: memory is bounded)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.total: torch.Tensor | None = None
        self.kept: list[torch.Tensor] = []
        self.frames = 0
        self.size: tuple[int, int] | None = None  # original frame size

    def add_luma(self, luma: torch.Tensor, size: tuple[int, int]) -> None:
        if self.size is None:
            self.size = size
        elif self.size != size:
            return  # a mid-clip size change: keep the first geometry
        scale = luma.shape[0] / size[0]
        white = _whiten(luma.to(self.device, torch.float32), cell_px(*size) * scale)
        self.total = white if self.total is None else self.total + white
        if len(self.kept) < MAX_FRAMES:
            self.kept.append(white)
        self.frames += 1

    def add_rgb(self, frame: np.ndarray) -> None:
        if frame.ndim != 3 or frame.shape[2] < 3 or frame.dtype != np.uint8:
            raise InvalidVideo(f"expected H×W×3 uint8 frames, got {frame.dtype} {frame.shape}")
        h, w = frame.shape[:2]
        t = torch.from_numpy(np.ascontiguousarray(frame[..., :3])).to(self.device, torch.float32)
        luma = t[..., 0] * 0.299 + t[..., 1] * 0.587 + t[..., 2] * 0.114
        hw, ww = _work_size(h, w)
        if (hw, ww) != (h, w):
            luma = F.interpolate(luma[None, None], size=(hw, ww), mode="area")[0, 0]
        self.add_luma(luma, (h, w))


# -- lattice -----------------------------------------------------------------------------------
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


# -- folding and correlation -------------------------------------------------------------------
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


def _fold(a: torch.Tensor, lattice: np.ndarray) -> torch.Tensor:
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
        g = _fold(frame, lattice)
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


def _matched(folded: torch.Tensor) -> torch.Tensor:
    """Convolve with the cell's tent (the bilinear pattern's own shape), circularly."""
    k1 = torch.tensor([0.5, 1.0, 0.5], device=folded.device)
    kernel = (k1[:, None] * k1[None, :])[None, None]
    padded = F.pad(folded[None, None], (1, 1, 1, 1), mode="circular")
    return F.conv2d(padded, kernel)[0, 0]


@dataclass
class _KeyTemplates:
    sync_spec: torch.Tensor
    ind_spec: torch.Tensor


def _templates(key: WatermarkKey, device: torch.device) -> _KeyTemplates:
    lay = layout_for(bytes(key.secret))
    n = TILE * BINS
    sync = torch.zeros(n, n, device=device)
    ind = torch.zeros(n, n, device=device)
    cells = np.flatnonzero(lay.sync_mask)
    ky, kx = cells // TILE * BINS, cells % TILE * BINS
    sync[ky, kx] = torch.from_numpy(lay.signs[cells]).to(device)
    ind[ky, kx] = 1.0
    return _KeyTemplates(torch.fft.rfft2(sync), torch.fft.rfft2(ind))


def _zscores(g: torch.Tensor, tpl: _KeyTemplates) -> torch.Tensor:
    """z(τ) = Σ_k s_k g(k+τ) / sqrt(Σ_k g(k+τ)²) over sync cells k, for every cyclic shift τ."""
    n = g.shape[0]
    num = torch.fft.irfft2(torch.conj(tpl.sync_spec) * torch.fft.rfft2(g), s=(n, n))
    den = torch.fft.irfft2(torch.conj(tpl.ind_spec) * torch.fft.rfft2(g.square()), s=(n, n))
    return num / den.clamp_min(1e-12).sqrt()


def _cell_values(g: torch.Tensor, ty: int, tx: int) -> np.ndarray:
    """The TILE×TILE cell values at shift (ty, tx), with the [1/6, 1, 1/6] inter-cell blur undone."""
    n = TILE * BINS
    rows = (torch.arange(TILE, device=g.device) * BINS + ty) % n
    cols = (torch.arange(TILE, device=g.device) * BINS + tx) % n
    cells = g[rows][:, cols].to(torch.float64)
    w = torch.fft.fftfreq(TILE, device=g.device, dtype=torch.float64) * 2 * math.pi
    h1 = 1.0 + torch.cos(w) / 3.0
    spec = torch.fft.fft2(cells) / (h1[:, None] * h1[None, :])
    return torch.fft.ifft2(spec).real.cpu().numpy().reshape(-1)


def _soft_bits(key: WatermarkKey, cells: np.ndarray) -> np.ndarray:
    lay = layout_for(bytes(key.secret))
    data = ~lay.sync_mask
    soft = np.bincount(lay.bit_of_cell[data], weights=lay.signs[data] * cells[data], minlength=ecc.CHANNEL_BITS)
    scale = float(np.sqrt(np.mean(soft**2))) or 1.0
    return soft / scale


def _log_p(z: float, tests: int) -> float:
    return math.log(tests) - z * z / 2 if z > 0 else 0.0


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
        g = _matched(_aligned_fold(kept, lattice) if aligned else _fold(total, lattice))
        variants += [g, torch.roll(g.flip(1), 1, dims=1)]
    return variants, len(variants) * n * n


def _analyse(total: torch.Tensor, frame_size: tuple[int, int], keys: Sequence[WatermarkKey],
             frames: int, kept: Sequence[torch.Tensor] = (), looks: int = 1) -> WatermarkResult:
    """Best key, shift and variant; the p-value is a union bound over all of them and over `looks`.

    `looks` is how many times this clip's (growing) sample may be analysed, fixed before any frame
    is read (from the clip's duration): reporting the best of up to that many looks costs a factor
    `looks` in the bound (Bonferroni), so stopping at the first decisive look keeps p valid.
    """
    variants, per_key = key_free_variants(total, frame_size, kept)
    n = TILE * BINS
    tests = max(1, len(keys)) * per_key * max(1, looks)
    templates = [_templates(k, total.device) for k in keys]
    best: tuple[float, int, int, int, torch.Tensor] | None = None  # z, key index, ty, tx, g
    for g_variant in variants:
        for ki, tpl in enumerate(templates):
            z = _zscores(g_variant, tpl)
            flat = int(torch.argmax(z))
            zmax = float(z.view(-1)[flat])
            if best is None or zmax > best[0]:
                best = (zmax, ki, flat // n, flat % n, g_variant)
    assert best is not None
    zmax, ki, ty, tx, g = best
    log_p = _log_p(zmax, tests)
    p_value = float(min(1.0, math.exp(log_p))) if log_p < 700 else 1.0
    detected = p_value < DETECTION_P
    key = keys[ki]
    soft = _soft_bits(key, _cell_values(g, ty, tx))
    payload = ecc.decode(soft) if detected else None
    agreement = None
    if payload is not None:
        agreement = float(np.mean((soft < 0) == ecc.encode(payload).astype(bool)))
    return WatermarkResult(detected, p_value, payload, key.key_id if detected else None, zmax, agreement,
                           frames, None, soft)


def channel_snr(luma: torch.Tensor, frame_size: tuple[int, int], key: WatermarkKey, payload: int,
                geometry: int) -> float:
    """Signal-to-noise ratio of the channel bits one marked frame gives the detector (payload known).

    The embedder calls this on a frame it has just marked, to see how well the picture hides the
    mark *from the detector* (busy texture swamps it, flat areas carry it cleanly): the mean of the
    soft bits' agreement with the codeword over its spread, on working-size luma, folded at the
    unattacked lattice. One frame, no codec: optimistic, but it ranks clips by how hard they are.
    """
    scale = luma.shape[0] / frame_size[0]
    white = _whiten(luma, cell_px(*frame_size) * scale)
    period = TILE * cell_px(*frame_size, geometry) * scale
    g = _matched(_fold(white, np.array([[period, 0.0], [0.0, period]])))
    z = _zscores(g, _templates(key, luma.device))
    flat = int(torch.argmax(z))
    n = TILE * BINS
    soft = _soft_bits(key, _cell_values(g, flat // n, flat % n))
    agree = soft * (1.0 - 2.0 * ecc.encode(payload))
    return float(agree.mean() / max(float(agree.std()), 1e-6))


def _not_detected(reason: str, frames: int = 0) -> WatermarkResult:
    return WatermarkResult(False, 1.0, None, None, 0.0, None, frames, reason)


def looks_for(duration_s: float | None, window_s: float = WINDOW_S) -> list[float]:
    """Start times (s) of the windows the detector may read, fixed by the clip's duration alone.

    One window when the duration is unknown or short; otherwise up to `MAX_LOOKS` windows spread
    evenly over the whole clip. The list is decided before any frame is seen, which is what lets
    the p-value pay for it with a plain factor len(list) (see `_analyse`).
    """
    if duration_s is None or not math.isfinite(duration_s) or duration_s <= window_s * LOOK_MIN_SPAN:
        return [0.0]
    count = min(MAX_LOOKS, math.ceil(duration_s / window_s))
    return [duration_s * k / count for k in range(count)]


class _Looks:
    """Aggregates windows into one accumulator and analyses after each, stopping once decisive."""

    def __init__(self, keys: Sequence[WatermarkKey], dev: torch.device, looks: int) -> None:
        self.keys, self.looks = keys, looks
        self.acc = _Accumulator(dev)
        self.result: WatermarkResult | None = None
        self.done = 0

    def analyse(self) -> bool:
        """Analyse everything read so far; True when the answer is decisive (stop reading)."""
        if self.acc.total is None or self.acc.size is None:
            return False
        self.done += 1
        res = _analyse(self.acc.total, self.acc.size, self.keys, self.acc.frames, self.acc.kept, self.looks)
        better_payload = res.payload is not None and self.result is not None and self.result.payload is None
        same_kind = self.result is not None and (res.payload is None) == (self.result.payload is None)
        if self.result is None or better_payload or (same_kind and res.p_value < self.result.p_value):
            self.result = res
        return res.detected and res.payload is not None


def detect_watermark(frames: Iterable[np.ndarray], keys: Sequence[WatermarkKey], fps: float | None = None, *,
                     device: str | torch.device = "cpu", window_s: float = WINDOW_S,
                     max_frames: int = MAX_FRAMES) -> WatermarkResult:
    """Look for the mark of any of `keys` in `frames` (RGB uint8).

    A plain iterable is read for its first `window_s` seconds only (its length is unknown, so one
    look); a sequence (a list of frames) with `fps` gets the same windows over the whole clip as
    `detect_watermark_file`. Each window uses up to `max_frames` evenly spaced frames.
    """
    dev = torch.device(device)
    with _one_thread(dev):
        return _detect_frames(frames, keys, fps, dev, window_s, max_frames)


def _detect_frames(frames: Iterable[np.ndarray], keys: Sequence[WatermarkKey], fps: float | None,
                   dev: torch.device, window_s: float, max_frames: int) -> WatermarkResult:
    """`detect_watermark` proper."""
    if not keys:
        return _not_detected("no watermark keys")
    window = max(1, round(window_s * fps)) if fps else max_frames * 3
    stride = max(1, math.ceil(window / max_frames))
    if isinstance(frames, Sequence) and fps:
        starts = [round(t * fps) for t in looks_for(len(frames) / fps, window_s)]
    else:
        starts = [0]
    looks = _Looks(keys, dev, len(starts))
    if len(starts) == 1:
        chunks: Iterable[Iterable[np.ndarray]] = [frames]
    else:
        seq = frames  # a Sequence here
        chunks = (seq[a: a + window] for a in starts)  # type: ignore[index]
    for chunk in chunks:
        for index, frame in enumerate(chunk):
            if index >= window:
                break
            if index % stride:
                continue
            if min(frame.shape[:2]) < MIN_SIDE:
                return _not_detected(f"frames are {frame.shape[1]}x{frame.shape[0]}, below the {MIN_SIDE}px minimum")
            looks.acc.add_rgb(frame)
        if looks.analyse():
            break
    if looks.result is None:
        return _not_detected("the clip has no frames")
    looks.result.frames_used = looks.acc.frames
    return looks.result


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
              fps: float) -> float | None:
    """The clip's duration in seconds from its header (None when the header does not say)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    if stream.frames:
        return stream.frames / fps
    return None


def _keyframe_times(path: Path) -> list[float]:
    """Presentation times (s) of the clip's key frames, from the packets alone (no decoding)."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        base = float(stream.time_base)
        return sorted(float(p.pts) * base for p in container.demux(stream)
                      if p.is_keyframe and p.pts is not None)
    finally:
        container.close()


class _WindowReader:
    """Reads look windows from one open clip, seeking to a key frame when one lies ahead.

    A window starts at the first key frame at or after its planned start when there is one beyond
    what was already read (a seek there costs no decoding in between); otherwise decoding simply
    continues, skipping frames up to the planned start. Either way no frame is decoded twice, so
    reading every look costs at most one pass over the clip. Scaling to the working size and
    taking luma happen in FFmpeg (swscale); frames outside the sample are decoded, never converted.
    """

    def __init__(self, path: Path, container: av.container.InputContainer,
                 stream: av.video.stream.VideoStream, fps: float) -> None:
        self.path, self.container, self.stream, self.fps = path, container, stream, fps
        self.frames: Iterator[av.VideoFrame] = container.decode(stream)
        self.keyframes: list[float] | None = None
        self.covered = -math.inf  # everything before this time has been read

    def window(self, start_s: float, window_s: float, max_frames: int
               ) -> Iterator[tuple[np.ndarray, tuple[int, int]]]:
        fps = self.fps
        begin = max(start_s, self.covered)
        if start_s > 0:
            if self.keyframes is None:
                self.keyframes = _keyframe_times(self.path)
            ahead = [k for k in self.keyframes if k >= start_s - 0.5 / fps and k > self.covered + 0.5 / fps]
            if ahead:
                begin = ahead[0]
                self.container.seek(round(begin / float(self.stream.time_base)), stream=self.stream,
                                    backward=True)
                self.frames = self.container.decode(self.stream)
        window = max(1, round(window_s * fps))
        stride = max(1, math.ceil(window / max_frames))
        first: float | None = None
        for frame in self.frames:
            t = float(frame.time) if frame.time is not None else self.covered + 1.0 / fps
            if t < begin - 0.5 / fps:
                continue
            if first is None:
                first = t
            self.covered = max(self.covered, t + 0.5 / fps)
            index = round((t - first) * fps)
            if index >= window - 1:
                if index == window - 1 and index % stride == 0:
                    yield self._luma(frame)
                break
            if index % stride:
                continue
            yield self._luma(frame)

    @staticmethod
    def _luma(frame: av.VideoFrame) -> tuple[np.ndarray, tuple[int, int]]:
        h, w = frame.height, frame.width
        hw, ww = _work_size(h, w)
        gray = frame.reformat(width=ww, height=hw, format="gray", interpolation="AREA")
        return gray.to_ndarray(), (h, w)


def detect_watermark_file(path: Path | str, keys: Sequence[WatermarkKey], *, device: str | torch.device = "cpu",
                          window_s: float = WINDOW_S, max_frames: int = MAX_FRAMES) -> WatermarkResult:
    """`detect_watermark` on a video file (PyAV): windows spread over the whole clip, until decisive.

    The first window is the clip's first `window_s` seconds; longer clips get up to `MAX_LOOKS`
    windows in all (`looks_for`), read one after another into the same accumulator and analysed
    after each; reading stops at the first look that detects the mark and decodes its payload.
    """
    dev = torch.device(device)
    with _one_thread(dev):
        return _detect_file(Path(path), keys, dev, window_s, max_frames)


def _detect_file(path: Path, keys: Sequence[WatermarkKey], dev: torch.device, window_s: float,
                 max_frames: int) -> WatermarkResult:
    """`detect_watermark_file` proper."""
    if not keys:
        return _not_detected("no watermark keys")
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        starts = looks_for(_duration(container, stream, fps), window_s)
        looks = _Looks(keys, dev, len(starts))
        reader = _WindowReader(path, container, stream, fps)
        try:
            for start in starts:
                for luma, size in reader.window(start, window_s, max_frames):
                    if min(size) < MIN_SIDE:
                        return _not_detected(f"frames are {size[1]}x{size[0]}, below the {MIN_SIDE}px minimum")
                    looks.acc.add_luma(torch.from_numpy(luma.astype(np.float32)), size)
                if looks.analyse():
                    break
        except (av.error.FFmpegError, ValueError) as exc:
            raise InvalidVideo(f"{path}: the video data is corrupt or truncated ({exc})") from None
    finally:
        container.close()
    if looks.result is None:
        raise InvalidVideo(f"{path}: the video stream holds no decodable frame")
    looks.result.frames_used = looks.acc.frames
    return looks.result
