"""Make the v1 watermark fixtures: small clips marked by the watermark code of commit cdd8ebe.

Run once, from the repository root, with that code: `python tests/data/make_watermark_fixtures.py`.
The clips and `watermark_v1.json` (their key, payload and size) are committed, so that
`tests/test_watermark_compat.py` proves clips published before a watermark change still decode.
Re-running it after the watermark changed would defeat its purpose: the files are the record.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from provenance.video import write_video
from provenance.watermark import WatermarkEmbedder, WatermarkKey, detect_watermark_file

HERE = Path(__file__).resolve().parent
SECRET = bytes(range(200, 232))
KEY_ID = "wm-fixture-v1"
CLIPS = [("wm_v1_128x96.mp4", 128, 96, 18, 0x0123456789ABCDEF, 1),
         ("wm_v1_256x144.mp4", 256, 144, 24, 0xFEDCBA9876543210, 2),
         ("wm_v1_320x240.mp4", 320, 240, 18, 0x00C0FFEE12345678, 3)]


def scene(seed: int, width: int, height: int, frames: int) -> list[np.ndarray]:
    """A smooth random scene with grain and a flat band, panning two pixels a frame."""
    rng = np.random.default_rng(seed)
    field = (rng.random((5, 7, 3)) * 255).astype(np.uint8)
    big = np.asarray(Image.fromarray(field).resize((width + 64, height + 64), Image.Resampling.BICUBIC))
    grain = rng.normal(0, 6, (height + 64, width + 64, 1))
    grain[: (height + 64) // 3] = 0
    canvas = np.clip(big.astype(np.float32) + grain, 0, 255).astype(np.uint8)
    return [np.ascontiguousarray(canvas[i: i + height, 2 * i: 2 * i + width]) for i in range(frames)]


def main() -> None:
    key = WatermarkKey(KEY_ID, SECRET)
    records = []
    for name, width, height, frames, payload, seed in CLIPS:
        embedder = WatermarkEmbedder(key, payload)
        marked = [embedder.embed(f, i) for i, f in enumerate(scene(seed, width, height, frames))]
        path = HERE / name
        write_video(path, iter(marked), 12.0, crf=18, preset="veryfast")
        result = detect_watermark_file(path, [key])
        assert result.detected and result.payload == payload, (name, result)
        records.append({"file": name, "width": width, "height": height, "frames": frames, "fps": 12.0,
                        "payload": f"{payload:016x}", "p_value_at_creation": result.p_value})
    body = {"algorithm": "org.credence.watermark.v1", "made_by_commit": "cdd8ebe", "key_id": KEY_ID,
            "secret_hex": SECRET.hex(), "clips": records}
    (HERE / "watermark_v1.json").write_text(json.dumps(body, indent=2) + "\n")


if __name__ == "__main__":
    main()
