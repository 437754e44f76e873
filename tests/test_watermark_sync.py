"""Sync alone (issue 22): the detector recovers a known crop offset and scale, including a 9:16 reframe.

The frames are synthetic and never encoded (the bench carries the codec attacks): what is tested is
that the geometry is found, i.e. that the sweep's best period is the true tile period after the edit,
and that the cyclic shift it picks is the crop's offset (the payload decodes there: at any other
shift the data cells are read in the wrong places and the CRC-32 fails).
"""

from __future__ import annotations

import itertools
import math

import cv2
import numpy as np
import pytest
import torch

from provenance.watermark import WatermarkEmbedder, detect_watermark, statistics, sweep, windows
from provenance.watermark.layout import TILE, cell_px

from .test_watermark_v2 import KEY, PAYLOAD, scene

W, H = 640, 360


@pytest.fixture(scope="module")
def marked() -> tuple[list[np.ndarray], int]:
    """The marked frames and their tile geometry: v3, whose 360p tile is the whole short side (the 9:16
    reframe leaves less than one tile across: no repeat for the autocorrelation, only the sweep)."""
    embedder = WatermarkEmbedder(KEY, PAYLOAD, geometry=3)
    frames = [embedder.embed(f, i) for i, f in enumerate(scene(7, W, H, 24))]
    assert embedder.geometry is not None
    return frames, embedder.geometry


def _edit(frame: np.ndarray, crop: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    y0, x0, h, w = crop
    part = frame[y0:y0 + h, x0:x0 + w]
    shrink = size[0] < w
    return cv2.resize(part, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def _reframe_9x16() -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    cw = round(H * 9 / 16) // 2 * 2
    return (0, (W - cw) // 2, H, cw), (720, 1280)  # keeps a third of the width, then the platform's 720x1280


GRID = {
    "crop 0.8 (off centre) then 0.5x": ((40, 61, 288, 512), (256, 144)),
    "crop 0.7 then 1.3x": ((17, 90, 252, 448), (582, 328)),
    "9:16 reframe then 720x1280 (3.56x)": _reframe_9x16(),
}


@pytest.mark.parametrize("name", list(GRID))
def test_sync_recovers_a_known_crop_and_scale(marked: tuple[list[np.ndarray], int], name: str) -> None:
    crop, size = GRID[name]
    frames, geometry = marked
    edited = [_edit(f, crop, size) for f in frames]
    scale = size[0] / crop[3]
    acc = windows._Accumulator(torch.device("cpu"))
    for f in edited:
        acc.add_rgb(f)
    assert acc.total is not None and acc.size is not None
    work_h = acc.total.shape[0]
    expected = TILE * cell_px(H, W, geometry) * scale * work_h / size[1]  # the true tile period, working pixels
    folds, _ = statistics.sweep_variants(acc.total, acc.size)
    periods = sweep.sweep_periods(*acc.total.shape, *acc.size)
    tpl = statistics._templates(KEY, torch.device("cpu"))
    z = [float(statistics._zscores(g, tpl).max()) for g in folds]
    best = int(np.argmax(z))
    assert periods[best] == pytest.approx(expected, rel=0.015), (periods[best], expected)
    assert z[best] > 6.5  # the null trials' largest z over 10,000 keys was 5.5
    result = detect_watermark(edited, [KEY], 12.0)
    assert result.detected and result.payload == PAYLOAD, result


def test_the_sweep_is_fixed_by_the_frame_size_and_counted_in_the_bound() -> None:
    a = sweep.sweep_periods(455, 256, 1280, 720)
    assert a == sweep.sweep_periods(455, 256, 1280, 720) and len(a) > 50
    # Neighbouring periods misplace a cell at the frame's edge (455 / 2 px from the centre) by <= SLIP_CELLS.
    assert all(TILE * 455 / 2 * (b / p - 1) / p <= sweep.SLIP_CELLS + 1e-9 for p, b in itertools.pairwise(a))
    assert sweep.sweep_tests(455, 256, 1280, 720) == len(a) * (TILE * 2) ** 2
    # An unmarked frame: the count includes the sweep's tests, so the best z over them stays unremarkable.
    rng = np.random.default_rng(3)
    total = torch.from_numpy(rng.normal(0, 1, (455, 256)).astype(np.float32))
    res = statistics._analyse(total, (1280, 720), [KEY], 1)
    assert not res.detected and res.payload is None
    assert res.p_value == 1.0 or math.log(res.p_value) > math.log(1e-3)


def test_a_sparse_fold_scores_no_more_than_its_few_nonzero_bins_allow() -> None:
    """Folds of sparse content (text on a flat background; sweep periods far larger than the frame) are
    mostly exact zeros: where a shift's sync cells all fall on them, the FFT's rounding used to be
    divided by a clamped denominator, and z reached millions on unmarked content."""
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(200):
        g = torch.zeros(64, 64, dtype=torch.float32)
        for _ in range(int(rng.integers(1, 6))):
            r, c = rng.integers(0, 64, 2)
            g[r, c] = float(rng.normal() * 10 ** rng.uniform(-3, 3))
        g[int(rng.integers(0, 64)), int(rng.integers(0, 64))] += float(10 ** rng.uniform(0, 4))
        key = KEY if rng.random() < 0.5 else type(KEY)("other", rng.bytes(32))
        worst = max(worst, float(statistics._zscores(g, statistics._templates(key, torch.device("cpu"))).max()))
    assert worst <= math.sqrt(6 * 9) + 1e-3  # at most 6 nonzero bins, each spread over 9 by the matched filter
