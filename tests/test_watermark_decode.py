"""The stronger decoding of issue 22: the CRC-aided list Viterbi, and a CRC-valid payload as evidence.

A payload that decodes with its CRC-32 intact is evidence of the mark by itself (p ≤ 2·looks·L·2^-32,
whatever the content: `statistics.crc_log_p`), so a mark whose sync cells fell short of the
threshold but whose payload still decodes is read; random soft values and another key's tile never
produce one. Fast: no video is encoded.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from provenance.watermark import DETECTION_P, WatermarkKey, ecc
from provenance.watermark.layout import cell_px, layout_for, render_pattern, tile_values
from provenance.watermark.statistics import _analyse, _log_p, crc_log_p

KEY = WatermarkKey("wm-decode", bytes(range(1, 33)))
OTHER = WatermarkKey("wm-other", bytes(range(100, 132)))
PAYLOAD = 0x0123456789ABCDEF


def test_list_viterbi_puts_the_plain_viterbi_word_first_and_decodes_more() -> None:
    rng = np.random.default_rng(0)
    plain = listed = 0
    for _ in range(40):
        payload = int(rng.integers(0, 2**63))
        soft = 1 - 2 * ecc.encode(payload).astype(float) + rng.normal(0, 1.25, ecc.CHANNEL_BITS)
        words = ecc.viterbi_list(soft, 16)
        assert (words[0] == ecc.viterbi(soft)).all()
        plain += ecc.decode(soft, 1) == payload
        got = ecc.decode(soft, ecc.LIST_SIZE)
        assert got in (None, payload)  # never a wrong payload
        listed += got == payload
    assert listed > plain  # 40 noisy words at sigma 1.25: the list decoder reads more of them


def test_random_soft_values_never_pass_the_crc() -> None:
    rng = np.random.default_rng(1)
    assert all(ecc.decode(rng.normal(0, 1, ecc.CHANNEL_BITS)) is None for _ in range(100))


def _weak_sync_mark(secret: bytes, sync_gain: float, seed: int = 5) -> torch.Tensor:
    """A whitened working-size frame whose data cells carry PAYLOAD and whose sync cells are faint."""
    lay = layout_for(secret)
    tile = tile_values(secret, PAYLOAD).reshape(-1).copy()
    tile[lay.sync_mask] *= sync_gain
    pattern = render_pattern(torch.from_numpy(tile.reshape(32, 32)), 256, 256, cell_px(256, 256))
    noise = np.random.default_rng(seed).normal(0, 2.0, (256, 256)).astype(np.float32)
    return pattern + torch.from_numpy(noise)


def test_a_payload_that_decodes_is_evidence_where_the_sync_alone_falls_short() -> None:
    total = _weak_sync_mark(KEY.secret, 0.15)
    result = _analyse(total, (256, 256), [KEY], 1, (), looks=1)
    assert math.exp(_log_p(result.z_score, 1)) > DETECTION_P  # the sync statistic alone: not even one test passes
    assert result.detected and result.payload == PAYLOAD
    assert math.isclose(result.log10_p, (math.log(2) + crc_log_p(1)) / math.log(10))
    assert result.p_value < DETECTION_P


def test_another_keys_weak_mark_is_not_read() -> None:
    total = _weak_sync_mark(OTHER.secret, 0.15)
    result = _analyse(total, (256, 256), [KEY], 1, (), looks=1)
    assert not result.detected and result.payload is None and result.p_value >= DETECTION_P
