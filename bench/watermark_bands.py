"""How much of a cell pattern survives this machine's encoders, per cell size (issue 22: where codecs keep energy).

    python -m bench.watermark_bands                       # doorknob-hd at 1280x720, 1 s, cells 4..32 px
    python -m bench.watermark_bands --seconds 0.5 --cells 8,16 --crfs 28,40

A keyed-tile-like pattern (random ±1 cells, bilinear between cell centres, as `layout.render_pattern`
draws the mark) of a given cell size is added at a fixed RMS (1.5 grey levels, ~44.6 dB) to the
luma of a real clip; the marked and the unmarked clip go through the same encode (H.264 veryfast
and H.265 medium at each CRF, one thread) and the survival of the pattern is the projection of
(decoded marked − decoded unmarked) onto the pattern, over the pattern's energy: 1.0 is all of it,
0 none. The codec's treatment of the picture cancels in the difference; what remains is what the
codec kept of the mark. Writes bench/results/watermark_bands.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.watermark import REAL, encode, real_clip
from provenance.video import iter_frames
from provenance.watermark.layout import render_pattern

RMS = 1.5


def survival(frames: list[np.ndarray], fps: float, cell: float, codec: str, crf: int, work: Path) -> float:
    """Share of the pattern's amplitude (projection) left after one encode at `crf`."""
    h, w = frames[0].shape[:2]
    h, w = h // 2 * 2, w // 2 * 2
    rng = np.random.default_rng(int(cell * 100))
    tile = torch.from_numpy((rng.integers(0, 2, (32, 32)) * 2 - 1).astype(np.float32))
    pattern = render_pattern(tile, h, w, cell).numpy() * RMS
    marked = [np.clip(f[:h, :w].astype(np.float32) + pattern[..., None], 0, 255).round().astype(np.uint8)
              for f in frames]
    opts = {"codec": codec, "crf": crf}
    a = list(iter_frames(encode(marked, work / "m.mp4", fps, opts)))
    b = list(iter_frames(encode([f[:h, :w] for f in frames], work / "p.mp4", fps, opts)))
    num = den = 0.0
    for x, y in zip(a, b, strict=False):
        d = (x.astype(np.float64) - y.astype(np.float64)) @ np.array([0.299, 0.587, 0.114])
        num += float(np.sum(d * pattern))
        den += float(np.sum(pattern * pattern))
    return num / den


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default=REAL[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--cells", default="4,6,8,11.25,16,24,32", help="cell sizes in px at 1280x720")
    parser.add_argument("--crfs", default="28,32,36,40")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "watermark_bands.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = real_clip(args.clip, args.seconds)
    if loaded is None:
        parser.error(f"{args.clip} is not in ../shared/data")
    frames, fps = loaded
    rows = []
    with tempfile.TemporaryDirectory(prefix="wm-bands-") as tmp:
        for cell in (float(c) for c in args.cells.split(",")):
            for codec in ("libx264", "libx265"):
                for crf in (int(c) for c in args.crfs.split(",")):
                    s = survival(frames, fps, cell, codec, crf, Path(tmp))
                    rows.append({"cell_px": cell, "codec": codec, "crf": crf, "survival": round(s, 4)})
                    print(f"cell {cell:6.2f} px  {codec:8s} CRF {crf}: {s:.3f}", flush=True)
    h, w = frames[0].shape[:2]
    result = {"clip": args.clip, "size": f"{w}x{h}", "seconds": args.seconds, "rms": RMS, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
