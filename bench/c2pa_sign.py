"""C2PA signing throughput: clips signed per second and MB/s for a 10 s 720p H.264 clip.

Anchor: c2pa-rs signs about 74 such clips/s on one core (research notes). Run:
    python -m bench.c2pa_sign [--repeats 50] [--seconds 10]
Prints a table and writes bench/results/c2pa_sign.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from provenance.credentials import ManifestContent, read_credentials, sign_manifest
from provenance.keys import ensure_development_keys, load_signing_identity, trust_anchors_pem
from provenance.video import write_video

RESULTS = Path(__file__).resolve().parent / "results"


def make_clip(path: Path, seconds: float, kind: str, width: int = 1280, height: int = 720,
              fps: float = 30.0) -> Path:
    """A 720p clip: "textured" (random blocks, a high bitrate) or "smooth" (a moving gradient)."""
    rng = np.random.default_rng(0)
    if kind == "textured":
        base = rng.integers(0, 256, (height // 16 + 1, width // 16 + 4, 3), dtype=np.uint8)
        big = np.kron(base, np.ones((16, 16, 1), dtype=np.uint8))
    else:
        ys, xs = np.mgrid[0:height, 0:width + 48]
        big = np.stack([(xs // 6) % 256, (ys // 3) % 256, ((xs + ys) // 8) % 256], -1).astype(np.uint8)
    frames = (big[:height, i % 48: i % 48 + width] for i in range(int(seconds * fps)))
    write_video(path, frames, fps, preset="ultrafast")
    return path


def measure(src: Path, tmp_dir: Path, keys: Path, repeats: int) -> dict[str, float]:
    """Sign and verify `src` `repeats` times; medians and p95 in ms."""
    identity, trust = load_signing_identity(keys), trust_anchors_pem(keys)
    sign_times, read_times = [], []
    for i in range(repeats):
        dst = tmp_dir / f"signed{i % 2}.mp4"
        content = ManifestContent(generation_id=f"gen-{i}", title=dst.name, model_name="bench",
                                  watermark_alg="org.credence.wm.v1", watermark_id=f"{i:016x}")
        t0 = time.perf_counter()
        sign_manifest(src, dst, content, identity, trust_pem=trust)
        sign_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        creds = read_credentials(dst, trust_pem=trust, our_signers={identity.leaf_serial})
        read_times.append(time.perf_counter() - t0)
        assert creds.state == "Trusted" and creds.ours
    size_mb = src.stat().st_size / 1e6
    med_sign, med_read = statistics.median(sign_times), statistics.median(read_times)
    return {
        "mb": round(size_mb, 2),
        "sign_ms_median": round(med_sign * 1e3, 2),
        "sign_ms_p95": round(sorted(sign_times)[int(0.95 * (len(sign_times) - 1))] * 1e3, 2),
        "clips_signed_per_s": round(1 / med_sign, 1),
        "sign_mb_per_s": round(size_mb / med_sign, 1),
        "verify_ms_median": round(med_read * 1e3, 2),
        "clips_verified_per_s": round(1 / med_read, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        keys = tmp_dir / "keys"
        ensure_development_keys(keys)
        for kind in ("smooth", "textured"):
            src = make_clip(tmp_dir / f"{kind}.mp4", args.seconds, kind)
            rows[kind] = measure(src, tmp_dir, keys, args.repeats)
    columns = list(rows["smooth"])
    print(f"{'clip (10 s 720p30 H.264)':<26}" + "".join(f"{c:>22}" for c in columns))
    for kind, row in rows.items():
        print(f"{kind:<26}" + "".join(f"{row[c]:>22}" for c in columns))
    print("anchor: c2pa-rs signs ~74 clips/s (0.35 MB clip) on one core; sign includes verify-after-sign")
    result = {"seconds": args.seconds, "size": "1280x720", "fps": 30, "repeats": args.repeats,
              "clips": rows, "anchor_c2pa_rs_clips_per_s": 74}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "c2pa_sign.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
