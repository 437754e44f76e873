"""Geometric verification as a fingerprint candidate (issue 24): ORB / AKAZE keypoints on stored keyframes.

    python -m bench.fingerprint_geometric                 # 7 real clip pieces x 6 attacks, cross pairs
    python -m bench.fingerprint_geometric --detector akaze

The candidate: at publish, keep a few keyframes of each clip (here 3, at 25/50/75 % of its
length, grey, 320 px long side); at verification, for a fingerprint candidate, match OpenCV
keypoints (ORB or AKAZE, no weights) between those keyframes and the upload's frames at the
same instants (the candidate's alignment gives them; here the attack's known pace), mirrored
too, and fit a similarity transform (scale, rotation, shift: what a crop or reframe is) with
RANSAC. The figure is the inlier count: a true pair must clear a threshold that no cross pair
(a keyframe against another clip's upload) reaches.

Reported per attack: the share of true pairs whose best inlier count clears the largest inlier
count of any cross pair (so, at zero false confirmations among those), and of any cross pair
between different source videos (pieces of one video are different clips of one scene, the
hardest pairs), and the bytes a clip would store. Writes bench/results/fingerprint_geometric.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from bench.detector import VIDEOS, real_pieces
from provenance.video import frame_rate, iter_frames, write_video
from tests.support.attacks import apply_attack

RESULTS = Path(__file__).resolve().parent / "results" / "fingerprint_geometric.json"
ATTACKS = ("reframe_9x16", "crop_70", "h265_crf32", "caption_band", "hflip", "speed_1.25")
SIDE = 320
SPEED = {"speed_1.25": 1.25}


def grey(frame: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    h, w = g.shape
    f = SIDE / max(h, w)
    return cv2.resize(g, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


def keyframes(frames: list[np.ndarray], fps: float) -> list[tuple[float, np.ndarray]]:
    n = len(frames)
    return [(i / fps, grey(frames[i])) for i in (n // 4, n // 2, 3 * n // 4)]


def features(detector: cv2.Feature2D, image: np.ndarray) -> tuple[list, np.ndarray | None]:
    return detector.detectAndCompute(image, None)


def inliers(det: cv2.Feature2D, a: tuple[list, np.ndarray | None], b_img: np.ndarray) -> int:
    """RANSAC inliers of a similarity transform between stored features `a` and image `b_img` (mirrored too)."""
    best = 0
    ka, da = a
    if da is None or len(ka) < 4:
        return 0
    norm = cv2.NORM_HAMMING
    matcher = cv2.BFMatcher(norm)
    for img in (b_img, np.ascontiguousarray(b_img[:, ::-1])):
        kb, db = features(det, img)
        if db is None or len(kb) < 4:
            continue
        pairs = matcher.knnMatch(da, db, k=2)
        good = [m for m, *rest in pairs if rest and m.distance < 0.8 * rest[0].distance]
        if len(good) < 4:
            continue
        src = np.float32([ka[m.queryIdx].pt for m in good])
        dst = np.float32([kb[m.trainIdx].pt for m in good])
        _, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=4.0)
        if mask is not None:
            best = max(best, int(mask.sum()))
    return best


def upload_greys(path: Path) -> tuple[float, list[np.ndarray]]:
    """The upload's frames, grey at the keyframes' size, and its rate (decoded once per upload)."""
    return frame_rate(path), [grey(f) for f in iter_frames(path)]


def at(upload: tuple[float, list[np.ndarray]], times: list[float]) -> list[np.ndarray]:
    fps, frames = upload
    return [frames[min(len(frames) - 1, round(t * fps))] for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detector", choices=("orb", "akaze"), default="orb")
    parser.add_argument("--features", type=int, default=300)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    det = cv2.ORB_create(nfeatures=args.features) if args.detector == "orb" else cv2.AKAZE_create()
    if not VIDEOS.exists():
        raise SystemExit(f"{VIDEOS}: the real clips are not here")
    pieces = real_pieces(Path("threatexchange"), "chair-orig-22-sd-bar.mp4", [0, 4.5, 9, 13.5, 18], 4)
    pieces += real_pieces(Path("threatexchange"), "doorknob-hd-no-bar.mp4", [0], 4)
    pieces += real_pieces(Path("threatexchange"), "pattern-hd-no-bar.mp4", [0], 3.4)
    work = Path(tempfile.mkdtemp(prefix="credence-bench-geometric-"))
    t0 = time.perf_counter()
    stored: list[tuple[str, list[float], list]] = []
    uploads: dict[tuple[int, str], Path] = {}
    store_bytes = []
    for k, (name, frames, fps) in enumerate(pieces):
        clip = work / f"clip-{k}.mp4"
        write_video(clip, iter(frames), fps, preset="veryfast", crf=18)
        keys = keyframes(frames, fps)
        feats = [features(det, img) for _, img in keys]
        store_bytes.append(sum(0 if d is None else d.nbytes + 8 * len(kp) for kp, d in feats))
        stored.append((name, [t for t, _ in keys], feats))
        for attack in ATTACKS:
            uploads[(k, attack)] = apply_attack(attack, clip, work / f"up-{k}-{attack}.mp4")
    rows = []
    for (k, attack), path in uploads.items():
        speed = SPEED.get(attack, 1.0)
        upload = upload_greys(path)
        for j, (_name, times, feats) in enumerate(stored):
            imgs = at(upload, [t / speed for t in times])
            score = max(inliers(det, f, img) for f, img in zip(feats, imgs, strict=True))
            rows.append({"clip": k, "attack": attack, "keyframes_of": j, "true": j == k, "inliers": score,
                         "same_video": pieces[j][0].split("@")[0] == pieces[k][0].split("@")[0]})
    cross = max(r["inliers"] for r in rows if not r["true"])
    # Pieces of one source video are different published clips of one scene: the hardest cross pairs.
    other = max(r["inliers"] for r in rows if not r["true"] and not r["same_video"])
    per_attack = {}
    for attack in ATTACKS:
        true = [r["inliers"] for r in rows if r["true"] and r["attack"] == attack]
        per_attack[attack] = {"n": len(true), "confirmed_above_every_cross_pair": round(
            sum(v > cross for v in true) / len(true), 3),
            "confirmed_above_other_videos": round(sum(v > other for v in true) / len(true), 3),
            "true_inliers_min": min(true), "true_inliers_median": float(np.median(true))}
    result = {"detector": args.detector, "features": args.features, "clips": len(pieces),
              "keyframes_per_clip": 3, "side_px": SIDE, "bytes_per_clip_mean": round(float(np.mean(store_bytes))),
              "cross_pairs": sum(not r["true"] for r in rows), "cross_inliers_max": cross,
              "cross_inliers_max_other_videos": other,
              "cross_inliers_p99": float(np.percentile([r["inliers"] for r in rows if not r["true"]], 99)),
              "per_attack": per_attack, "seconds": round(time.perf_counter() - t0, 1),
              "load_average": os.getloadavg(), "rows": rows}
    print(f"{args.detector}: {len(pieces)} clips, cross pairs max {cross} inliers ({other} between different "
          "videos); "
          f"{result['bytes_per_clip_mean']} bytes a clip")
    for attack, row in per_attack.items():
        print(f"  {attack:14s} confirmed {row['confirmed_above_every_cross_pair']:.3f} "
              f"(above other videos {row['confirmed_above_other_videos']:.3f})  "
              f"inliers min {row['true_inliers_min']} median {row['true_inliers_median']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
