"""Clips published before a watermark change still verify: fixtures marked by the v1 code decode.

The fixtures under tests/data were made once by `tests/data/make_watermark_fixtures.py` with the
watermark code of commit cdd8ebe (the v1 cell size, strength and mask) and shipped as H.264 CRF 18.
Any later change to the embedder, the tile geometry or the detector must keep decoding them with
the same key id and payload; that is the contract with every clip already in circulation.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provenance.watermark import DETECTION_P, WatermarkKey, detect_watermark_file

DATA = Path(__file__).resolve().parent / "data"
SPEC = json.loads((DATA / "watermark_v1.json").read_text())
KEY = WatermarkKey(SPEC["key_id"], bytes.fromhex(SPEC["secret_hex"]))
OTHER = WatermarkKey("wm-other", bytes(range(32)))


@pytest.mark.parametrize("clip", SPEC["clips"], ids=[c["file"] for c in SPEC["clips"]])
def test_v1_fixture_still_decodes(clip: dict[str, object]) -> None:
    result = detect_watermark_file(DATA / str(clip["file"]), [OTHER, KEY])
    assert result.detected and result.p_value < DETECTION_P, result
    assert result.key_id == SPEC["key_id"]
    assert result.payload_hex == clip["payload"]


def test_v1_fixture_wrong_key_is_not_detected() -> None:
    clip = SPEC["clips"][1]
    result = detect_watermark_file(DATA / str(clip["file"]), [OTHER])
    assert not result.detected and result.payload is None and result.p_value >= DETECTION_P
