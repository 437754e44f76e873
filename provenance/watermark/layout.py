"""The keyed tile: which cells carry the sync pattern, which carry which channel bit, and their signs.

Everything secret derives from the key's 32-byte secret through HMAC-SHA256 into a torch
Generator seed, so that two processes (or a GPU and a CPU) with the same key build the same tile,
and nobody without the key can tell the tile from noise. The tile is `TILE`×`TILE` cells; a cell
is a few pixels at the frame's own scale (`cell_px`), so the pattern repeats several times
across the frame: that repetition is what lets the detector undo crops and rescaling.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from . import ecc

ALGORITHM = "org.credence.watermark.v1"

#: Cells per tile side. 32×32 = 1024 cells: a quarter sync, the rest the 306 channel bits (2-3 each).
TILE = 32
SYNC_CELLS = TILE * TILE // 4
#: Tile geometry: how big a cell is for a frame size. v1 (clips marked up to commit cdd8ebe): the
#: short side holds 96 cells (3 tiles), a cell at least 6 px unless a tile would not fit. v2 (the
#: default): the short side holds `CELLS_PER_SHORT_SIDE` cells, a cell at least `MIN_CELL_PX`: a
#: coarser cell is a lower spatial frequency, which H.264 quantises less and a 0.5× downscale does
#: not under-sample (a 6 px cell on a 360p clip is 3 px after it, and ~2 px at the detector's size).
#: v3 (the default since issue 22): the short side holds 45 cells (16 px at 720p, 24 px at 1080p), a
#: cell at least 12 px unless a tile would not fit: H.264 at CRF 35 keeps 0.63 of a 16 px cell's
#: pattern on a real 720p clip where it keeps 0.36 of an 8 px one and 0.12 of a 4 px one
#: (bench/watermark_bands.py). The key's tile (which cells, which signs) is the same in all three;
#: the detector tries every geometry's period (each one more lattice in the p-value's count).
GEOMETRY = 3
GEOMETRIES = (1, 2, 3)
_CELLS = {1: 96, 2: 64, 3: 45}
_MIN_CELL = {1: 6.0, 2: 8.0, 3: 12.0}
CELLS_PER_SHORT_SIDE = _CELLS[GEOMETRY]
MIN_CELL_PX = _MIN_CELL[GEOMETRY]


@dataclass(frozen=True)
class WatermarkKey:
    """A watermark secret (32 bytes from `credence init`) and the id that names it."""

    key_id: str
    secret: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes | bytearray) or len(self.secret) < 16:
            raise ValueError("a watermark secret must be at least 16 bytes")

    def __repr__(self) -> str:  # never print the secret
        return f"WatermarkKey(key_id={self.key_id!r})"


@dataclass(frozen=True)
class Layout:
    """The keyed tile layout (all arrays indexed by flat cell number, row-major)."""

    sync_mask: np.ndarray  # bool (cells,)
    signs: np.ndarray  # ±1 float32 (cells,): s_k on sync cells, r_k on payload cells
    bit_of_cell: np.ndarray  # int64 (cells,): channel bit index, -1 on sync cells


def _seed(secret: bytes, label: str) -> int:
    digest = hmac.new(bytes(secret), f"{ALGORITHM}/{label}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


@lru_cache(maxsize=32)
def layout_for(secret: bytes) -> Layout:
    """The tile layout of a key (cached: detection tries every key on every clip)."""
    gen = torch.Generator(device="cpu").manual_seed(_seed(secret, "layout"))
    cells = TILE * TILE
    perm = torch.randperm(cells, generator=gen).numpy()
    signs = (torch.randint(0, 2, (cells,), generator=gen).numpy() * 2 - 1).astype(np.float32)
    sync_mask = np.zeros(cells, dtype=bool)
    sync_mask[perm[:SYNC_CELLS]] = True
    bit_of_cell = np.full(cells, -1, dtype=np.int64)
    bit_of_cell[perm[SYNC_CELLS:]] = np.arange(cells - SYNC_CELLS) % ecc.CHANNEL_BITS
    return Layout(sync_mask, signs, bit_of_cell)


def tile_values(secret: bytes, payload: int) -> np.ndarray:
    """The ±1 tile (TILE×TILE float32) that carries `payload` under `secret`."""
    lay = layout_for(bytes(secret))
    code = 1.0 - 2.0 * ecc.encode(payload).astype(np.float32)  # bit 0 -> +1
    values = lay.signs.copy()
    data = ~lay.sync_mask
    values[data] *= code[lay.bit_of_cell[data]]
    return values.reshape(TILE, TILE)


def cell_px(height: int, width: int, geometry: int = GEOMETRY) -> float:
    """Side of one cell in pixels for a frame of this size, under tile geometry `geometry` (1, 2 or 3)."""
    if geometry not in _CELLS:
        raise ValueError(f"unknown watermark tile geometry {geometry!r}")
    short = min(height, width)
    return max(short / _CELLS[geometry], min(_MIN_CELL[geometry], short / TILE))


def render_pattern(tile: torch.Tensor, height: int, width: int, cell: float) -> torch.Tensor:
    """The tile repeated over an H×W frame, bilinear between cell centres, unit RMS.

    Bilinear interpolation keeps the pattern smooth (no block edges for the codec to spend bits
    on, nothing sharp for the eye), while each cell centre still holds its own ±1 exactly.
    """
    dev = tile.device

    def axis(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        u = (torch.arange(n, device=dev, dtype=torch.float64) + 0.5) / cell - 0.5
        i0 = torch.floor(u)
        frac = (u - i0).to(torch.float32)
        i0 = i0.to(torch.int64) % TILE
        return i0, (i0 + 1) % TILE, frac

    y0, y1, fy = axis(height)
    x0, x1, fx = axis(width)
    t = tile.to(torch.float32)
    top = t[y0][:, x0] * (1 - fx) + t[y0][:, x1] * fx
    bottom = t[y1][:, x0] * (1 - fx) + t[y1][:, x1] * fx
    pattern = top * (1 - fy)[:, None] + bottom * fy[:, None]
    return pattern / pattern.square().mean().sqrt().clamp_min(1e-6)
