"""The statistics: whitening, the keyed sync correlation, its p-value bound, and the payload's soft bits.

For a fixed cyclic shift, the sync statistic z = Σ s_k g_k / ||g|| is a sum of the key's
independent random signs s_k weighted by numbers that do not depend on the key, so under "not
marked with this key" P(z ≥ t) ≤ exp(-t²/2) (Hoeffding), whatever the content. A union bound over
every shift, mirror, lattice, key and look gives p = min(1, M·exp(-z²/2)) (`_analyse`). At the best
shift each cell's value is read, the cells of each channel bit summed with their keyed signs, and
the soft bits go to the Viterbi decoder (`provenance.watermark.ecc`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from . import ecc
from .lattice import BINS, fold, key_free_variants, matched_filter
from .layout import TILE, WatermarkKey, cell_px, layout_for
from .sweep import scale_folds, sweep_tests

DETECTION_P = 1e-6
WORK_SHORT = 256
WHITEN_CELLS = 1.5
WHITEN_POWER = 0.5
WHITEN_REF = 1.0


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
    #: log10 of the p-value bound before clipping at 1 and underflow (a strong mark's p is 0.0 in a
    #: float; this says by how many decades it clears the threshold: the publish read-back's margin).
    log10_p: float = 0.0

    @property
    def payload_hex(self) -> str | None:
        """The payload as 16 hex digits."""
        return None if self.payload is None else f"{self.payload:016x}"

    def to_dict(self) -> dict[str, object]:
        """The CLI/JSON form."""
        return {"detected": self.detected, "p_value": self.p_value, "payload": self.payload_hex,
                "key_id": self.key_id if self.detected else None}


def work_size(height: int, width: int) -> tuple[int, int]:
    scale = min(1.0, WORK_SHORT / min(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def whiten(luma: torch.Tensor, cell: float) -> torch.Tensor:
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


@dataclass
class _KeyTemplates:
    sync_spec: torch.Tensor
    ind_spec: torch.Tensor


def _templates(key: WatermarkKey, device: torch.device) -> _KeyTemplates:
    lay = layout_for(bytes(key.secret))
    n = TILE * BINS
    sync = torch.zeros(n, n, device=device, dtype=torch.float64)
    ind = torch.zeros(n, n, device=device, dtype=torch.float64)
    cells = np.flatnonzero(lay.sync_mask)
    ky, kx = cells // TILE * BINS, cells % TILE * BINS
    sync[ky, kx] = torch.from_numpy(lay.signs[cells]).to(device, torch.float64)
    ind[ky, kx] = 1.0
    return _KeyTemplates(torch.fft.rfft2(sync), torch.fft.rfft2(ind))


#: A shift whose sync cells hold less than this share of the fold's energy scores z = 0. There the
#: exact numerator and denominator are (near) zero and what the FFT returns is rounding: on a sparse
#: fold (text on a flat background, a sweep period far larger than the frame) float32 FFTs gave
#: z in the millions on unmarked content. Dropping such shifts can only lower the maximum, so the
#: bound stays valid; the FFTs run in float64 as well.
DEN_FLOOR = 1e-9


def _zscores(g: torch.Tensor, tpl: _KeyTemplates) -> torch.Tensor:
    """z(τ) = Σ_k s_k g(k+τ) / sqrt(Σ_k g(k+τ)²) over sync cells k, for every cyclic shift τ."""
    n = g.shape[-1]
    g = g.to(torch.float64)
    num = torch.fft.irfft2(torch.conj(tpl.sync_spec) * torch.fft.rfft2(g), s=(n, n))
    den = torch.fft.irfft2(torch.conj(tpl.ind_spec) * torch.fft.rfft2(g.square()), s=(n, n))
    return zscores_from(num, den, g)


def zscores_from(num: torch.Tensor, den: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """num / sqrt(den) where the sync cells hold at least `DEN_FLOOR` of the fold's energy, else 0 (float32)."""
    floor = DEN_FLOOR * g.square().sum(dim=(-2, -1), keepdim=True).clamp_min(1e-300)
    ok = den > floor
    z = torch.where(ok, num / den.clamp_min(1e-300).sqrt(), torch.zeros_like(num))
    return z.to(torch.float32)


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


#: Decodes per look: the best ordinary lattice's, and the scale sweep's best (`sweep`) when the
#: first does not decode. Counted always in the CRC bound, whichever path a clip takes.
DECODES_PER_LOOK = 2


def crc_log_p(looks: int) -> float:
    """log of the bound on "some look's decoded list holds a word whose CRC-32 checks", for any content.

    Under "not marked with this key" the data cells' keyed signs are independent fair coins, and
    nothing before the decoder looks at them (the lattice, fold, shift and key are chosen from the
    sync cells alone). Flipping a channel bit's cells flips its soft value, so the soft vector is
    as likely as any sign-flipped copy of it; the code is linear, so the decoder's list is then a
    uniformly random translate, each of its words a uniform info word, and one in 2^32 of those has
    a valid CRC-32. `DECODES_PER_LOOK` decodes per look, `ecc.LIST_SIZE` words each:
    looks·D·L·2^-32 (~1.2e-7 for 4 looks). A CRC-valid payload is evidence of the mark by itself,
    even where the sync cells alone fall short of the threshold (a mark the codec left weak but
    whose payload still decodes).
    """
    return math.log(max(1, looks) * DECODES_PER_LOOK * ecc.LIST_SIZE) - ecc.CRC_BITS * math.log(2.0)


def _best(variants: Sequence[torch.Tensor], templates: Sequence[_KeyTemplates]
          ) -> tuple[float, int, int, int, torch.Tensor] | None:
    """The (z, key index, ty, tx, fold) with the highest sync statistic over variants and keys."""
    n = TILE * BINS
    best: tuple[float, int, int, int, torch.Tensor] | None = None
    for g_variant in variants:
        for ki, tpl in enumerate(templates):
            z = _zscores(g_variant, tpl)
            flat = int(torch.argmax(z))
            zmax = float(z.view(-1)[flat])
            if best is None or zmax > best[0]:
                best = (zmax, ki, flat // n, flat % n, g_variant)
    return best


def sweep_variants(total: torch.Tensor, frame_size: tuple[int, int]) -> tuple[list[torch.Tensor], int]:
    """The keyed scale sweep's matched-filtered folds (`sweep.scale_folds`) and its count of tests per key."""
    return [matched_filter(f) for f in scale_folds(total, frame_size)], sweep_tests(*total.shape, *frame_size)


def _analyse(total: torch.Tensor, frame_size: tuple[int, int], keys: Sequence[WatermarkKey],
             frames: int, kept: Sequence[torch.Tensor] = (), looks: int = 1, sweep: bool = True) -> WatermarkResult:
    """Best key, shift and variant; the p-value is a union bound over all of them and over `looks`.

    `looks` is how many times this clip's (growing) sample may be analysed, fixed before any frame
    is read (from the clip's duration): reporting the best of up to that many looks costs a factor
    `looks` in the bound (Bonferroni), so stopping at the first decisive look keeps p valid. The
    keyed scale sweep (`sweep`) runs only when the ordinary lattices give no payload, but its
    tests are in the count always. `sweep=False` skips it outright: an early look of a longer
    read, where the sweep's ~0.4 s at 720p is mostly wasted (an unmarked upload, the common case,
    pays it on every look) and the last look, with more frames summed, sweeps anyway. Testing
    fewer of the counted hypotheses only lowers the maximum, so the bound holds either way.
    """
    variants, per_key = key_free_variants(total, frame_size, kept)
    per_key += sweep_tests(*total.shape, *frame_size)  # counted whether or not the sweep runs
    tests = max(1, len(keys)) * per_key * max(1, looks)
    templates = [_templates(k, total.device) for k in keys]
    best = _best(variants, templates)
    assert best is not None
    zmax, ki, ty, tx, g = best
    soft = _soft_bits(keys[ki], _cell_values(g, ty, tx))
    payload = ecc.decode(soft)
    if payload is None and sweep:
        swept = _best(sweep_variants(total, frame_size)[0], templates)
        if swept is not None:
            s_soft = _soft_bits(keys[swept[1]], _cell_values(swept[4], swept[2], swept[3]))
            s_payload = ecc.decode(s_soft)
            if s_payload is not None or swept[0] > zmax:
                zmax, ki, ty, tx, g = swept
                soft, payload = s_soft, s_payload
    key = keys[ki]
    # Two tests, each a valid bound: the sync statistic, and "a word of the decoder's list passes
    # the CRC-32" (`crc_log_p`). Reporting the smaller costs a factor 2 (P(2·min(p1, p2) ≤ a) ≤ a).
    log_p = math.log(2.0) + min(_log_p(zmax, tests), crc_log_p(looks) if payload is not None else 0.0)
    p_value = float(min(1.0, math.exp(log_p))) if log_p < 700 else 1.0
    detected = p_value < DETECTION_P
    payload = payload if detected else None
    agreement = None
    if payload is not None:
        agreement = float(np.mean((soft < 0) == ecc.encode(payload).astype(bool)))
    return WatermarkResult(detected, p_value, payload, key.key_id if detected else None, zmax, agreement,
                           frames, None, soft, min(0.0, log_p / math.log(10)))


def channel_snr(luma: torch.Tensor, frame_size: tuple[int, int], key: WatermarkKey, payload: int,
                geometry: int) -> float:
    """Signal-to-noise ratio of the channel bits one marked frame gives the detector (payload known).

    The embedder calls this on a frame it has just marked, to see how well the picture hides the
    mark *from the detector* (busy texture swamps it, flat areas carry it cleanly): the mean of the
    soft bits' agreement with the codeword over its spread, on working-size luma, folded at the
    unattacked lattice. One frame, no codec: optimistic, but it ranks clips by how hard they are.
    """
    scale = luma.shape[0] / frame_size[0]
    white = whiten(luma, cell_px(*frame_size) * scale)
    period = TILE * cell_px(*frame_size, geometry) * scale
    g = matched_filter(fold(white, np.array([[period, 0.0], [0.0, period]])))
    z = _zscores(g, _templates(key, luma.device))
    flat = int(torch.argmax(z))
    n = TILE * BINS
    soft = _soft_bits(key, _cell_values(g, flat // n, flat % n))
    agree = soft * (1.0 - 2.0 * ecc.encode(payload))
    return float(agree.mean() / max(float(agree.std()), 1e-6))


def not_detected(reason: str, frames: int = 0) -> WatermarkResult:
    return WatermarkResult(False, 1.0, None, None, 0.0, None, frames, reason)
