"""Fingerprint candidates side by side on real clips (issue 24): stored regions and query sub-crops.

    python -m bench.fingerprint_candidates                 # base (the shipped regions) and each variant
    python -m bench.fingerprint_candidates --variants base,fine

Ten real pieces (../shared/data/videos: 5 chair, 1 doorknob, 1 pattern, and 3 portrait 320x480
crops of the last three) are fingerprinted on the published side from their frames; each edit is
applied to a file of the piece and looked up by the fingerprint alone in an index of the ten. A
hit is the right clip first, strong (`is_strong`), with no other clip strong (a portrait and the
landscape piece it was cut from are the same footage and are not counted against each other).
A variant swaps module constants before the index is built, so every variant is measured on the
same files in one process. Edits are cached under --work between runs.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from bench.detector import real_pieces
from detector.fingerprint_source import is_strong
from provenance.fingerprint import fingerprint_frames, hashing, query_fingerprint
from provenance.index import FingerprintIndex
from provenance.video import write_video
from tests.support.attacks import ATTACKS, apply_attack, centre_crop

ATTACKS.setdefault("crop85_crf28", (centre_crop(0.85), {"crf": 28}, None))
EDITS = ["reframe_9x16", "crop_70", "crop85_crf28", "h265_crf32", "caption_band", "speed_1.25", "hflip"]
SHIPPED = (hashing.STORED_REGIONS, hashing.QUERY_SCALES)
OLD_REGIONS = ((None, 1.0), (None, 0.68), (1.0, 0.68), (9 / 16, 0.68), ("top", 1.0), ("bottom", 1.0))


def _set(regions: tuple | None = None, scales: tuple | None = None) -> Callable[[], None]:
    def apply() -> None:
        hashing.STORED_REGIONS = regions or SHIPPED[0]
        hashing.QUERY_SCALES = scales or SHIPPED[1]
    return apply


FINE = (1.0, 0.96, 0.93, 0.89, 0.86, 0.83, 0.8, 0.77, 0.74, 0.71, 0.68)
VARIANTS: dict[str, Callable[[], None]] = {
    "base": _set(),  # what ships
    "before_24": _set(OLD_REGIONS),  # the regions before issue 24
    "fine": _set(OLD_REGIONS, FINE),  # 11 query sub-crops instead of 6
    "strip": _set((*OLD_REGIONS, (9 / 16, 1.0), (None, 0.5))),  # 8 regions: a third more bytes
    "swap": _set(((None, 1.0), (None, 0.68), (9 / 16, 1.0), (9 / 16, 0.68), ("top", 1.0), ("bottom", 1.0))),
}


def pieces() -> list[tuple[str, list[np.ndarray], float]]:
    """The ten real pieces (the last three portrait crops of the 5th-7th)."""
    out = real_pieces(Path("threatexchange"), "chair-orig-22-sd-bar.mp4", [0, 4.5, 9, 13.5, 18], 4)
    out += real_pieces(Path("threatexchange"), "doorknob-hd-no-bar.mp4", [0], 4)
    out += real_pieces(Path("threatexchange"), "pattern-hd-no-bar.mp4", [0], 3.4)
    for name, frames, fps in out[4:7]:
        h, w = frames[0].shape[:2]
        cw = round(h * 2 / 3) // 2 * 2
        x = (w - cw) // 2
        out.append((name + "-portrait", [np.asarray(Image.fromarray(f[:, x:x + cw]).resize((320, 480)))
                                         for f in frames], fps))
    return out


def measure(variant: str, clips: list, work: Path, edits: list[str]) -> dict[str, object]:
    """Share of the ten found per edit under `variant`."""
    VARIANTS[variant]()
    index = FingerprintIndex()
    index.regions = len(hashing.STORED_REGIONS)
    index._reset()
    for i, (_name, frames, fps) in enumerate(clips):
        index.add(i + 1, f"g{i}", fingerprint_frames(iter(frames), fps))
    sibling = {4: 7, 7: 4, 5: 8, 8: 5, 6: 9, 9: 6}
    found: dict[str, str] = {}
    misses = []
    t = time.perf_counter()
    for edit in edits:
        hits = 0
        for i, (name, _f, _fps) in enumerate(clips):
            matches = [m for m in index.search(query_fingerprint(work / f"att-{i}-{edit}.mp4"), limit=3)
                       if m.generation_id != f"g{sibling.get(i)}"]
            good = bool(matches) and matches[0].generation_id == f"g{i}" and is_strong(matches[0])
            good &= not any(is_strong(m) and m.generation_id != f"g{i}" for m in matches)
            hits += good
            if not good:
                misses.append(f"{edit} {name}: " + str([(m.generation_id, m.matched_seconds, m.expected_seconds,
                                                         round(m.mean_distance, 1)) for m in matches]))
        found[edit] = f"{hits}/{len(clips)}"
    hashing.STORED_REGIONS, hashing.QUERY_SCALES = SHIPPED
    return {"variant": variant, "found": found, "stored_bytes_per_second": 16 * index.regions,
            "query_s": round(time.perf_counter() - t, 1), "misses": misses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--edits", default=",".join(EDITS))
    parser.add_argument("--work", type=Path, default=Path("/tmp/credence-fingerprint-candidates"))
    args = parser.parse_args()
    edits = [e for e in args.edits.split(",") if e]
    args.work.mkdir(parents=True, exist_ok=True)
    clips = pieces()
    for i, (_name, frames, fps) in enumerate(clips):
        src = args.work / f"src-{i}.mp4"
        if not src.exists():
            write_video(src, iter(frames), fps, preset="veryfast", crf=18)
        for edit in edits:
            out = args.work / f"att-{i}-{edit}.mp4"
            if not out.exists():
                apply_attack(edit, src, out)
    rows = []
    for variant in [v for v in args.variants.split(",") if v]:
        row = measure(variant, clips, args.work, edits)
        rows.append(row)
        print(variant, json.dumps(row["found"]), f"{row['stored_bytes_per_second']} B/s stored", flush=True)
    out = Path(__file__).resolve().parent / "results" / "fingerprint_candidates.json"
    out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
