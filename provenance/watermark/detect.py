"""Detection: average whitened luma over frames, find the tile lattice, fold, correlate, decode.

0. Looks: the clip is read in windows (`WINDOW_S` seconds, `MAX_FRAMES` frames each) spread over
   its whole length, at most `MAX_LOOKS` of them, their number fixed by the duration alone before
   any frame is read (`looks_for`). Windows accumulate; after each one the sum is analysed, and
   reading stops at the first look that detects the mark and decodes its payload. A later window
   starts at a key frame when one lies ahead (no decoding in between), so reading every look
   costs at most one pass over the clip.
1. Each sampled frame is reduced to luma at a working size (short side `WORK_SHORT`), whitened
   (minus a local mean, divided by local activity, clipped, then weighted toward quiet regions)
   so that image content does not swamp the mark, and added to one running sum: memory is one
   working-size image (plus the first `MAX_FRAMES` whitened frames for the aligned fold).
2. The lattice of the repeated tile (its period and orientation, which crops do not change and
   rescaling, reframing and rotation do) is read off the autocorrelation of that sum: a peak
   search in two sectors, and a comb over square axis-aligned periods (a crop then a 0.5× resize
   of a small frame leaves less than two tiles on the short side). Neither uses a key, so they
   cost the p-value only their count; the unattacked lattices of both tile geometries (v1's
   smaller cells, v2's adaptive ones: `layout.cell_px`) are always tried as well.
3. For each lattice, every pixel is folded onto one tile (2 bins per cell); a crop only shifts
   the tile cyclically, so the keyed sync cells are correlated at every cyclic shift at once by
   FFT, also mirrored (a flipped clip).
4. p-value: for a fixed shift, the sync statistic z = Σ s_k g_k / ||g|| is a sum of the key's
   independent random signs s_k weighted by numbers that do not depend on the key, so under "not
   marked with this key" P(z ≥ t) ≤ exp(-t²/2) (Hoeffding), whatever the content. A union bound
   over every shift, mirror, lattice, key and look gives p = min(1, M·exp(-z²/2)): analytic and
   conservative, with no assumption about the video, and valid whichever look the reading stops at.
5. At the best shift, each cell's value is read (inverting the small blur that the bilinear
   pattern and the matched filter add), the cells of each channel bit are summed with their
   keyed signs, and the soft bits go to the Viterbi decoder; a payload is reported only when its
   CRC-32 checks.

The parts: `windows` (0, 1: looks, accumulation, reading), `lattice` (2, 3: lattice recovery and
folding) and `statistics` (3-5: whitening, correlation, the p-value, the soft bits).

`detected` is p < `DETECTION_P` (1e-6). A detection without a payload means "marked with our key,
but too damaged to say which clip"; a payload is never reported without a detection.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import av
import numpy as np
import torch

from ..errors import InvalidVideo
from ..video import decode_error, open_video
from ._threads import one_thread as _one_thread
from .embed import MIN_SIDE
from .layout import WatermarkKey
from .statistics import DETECTION_P, WatermarkResult, not_detected
from .windows import MAX_FRAMES, WINDOW_S, Looks, WindowReader, clip_duration, looks_for

__all__ = ["DETECTION_P", "WatermarkResult", "detect_watermark", "detect_watermark_file"]


def detect_watermark(frames: Iterable[np.ndarray], keys: Sequence[WatermarkKey], fps: float | None = None, *,
                     device: str | torch.device = "cpu", window_s: float = WINDOW_S,
                     max_frames: int = MAX_FRAMES) -> WatermarkResult:
    """Look for the mark of any of `keys` in `frames` (RGB uint8).

    A plain iterable is read for its first `window_s` seconds only (its length is unknown, so one
    look); a sequence (a list of frames) with `fps` gets the same windows over the whole clip as
    `detect_watermark_file`. Each window uses up to `max_frames` evenly spaced frames.
    """
    dev = torch.device(device)
    with _one_thread(dev):
        return _detect_frames(frames, keys, fps, dev, window_s, max_frames)


def _detect_frames(frames: Iterable[np.ndarray], keys: Sequence[WatermarkKey], fps: float | None,
                   dev: torch.device, window_s: float, max_frames: int) -> WatermarkResult:
    """`detect_watermark` proper."""
    if not keys:
        return not_detected("no watermark keys")
    window = max(1, round(window_s * fps)) if fps else max_frames * 3
    stride = max(1, math.ceil(window / max_frames))
    if isinstance(frames, Sequence) and fps:
        starts = [round(t * fps) for t in looks_for(len(frames) / fps, window_s)]
    else:
        starts = [0]
    looks = Looks(keys, dev, len(starts))
    if len(starts) == 1:
        chunks: Iterable[Iterable[np.ndarray]] = [frames]
    else:
        seq = frames  # a Sequence here
        chunks = (seq[a: a + window] for a in starts)  # type: ignore[index]
    for look, chunk in enumerate(chunks):
        for index, frame in enumerate(chunk):
            if index >= window:
                break
            if index % stride:
                continue
            if min(frame.shape[:2]) < MIN_SIDE:
                return not_detected(f"frames are {frame.shape[1]}x{frame.shape[0]}, below the {MIN_SIDE}px minimum")
            looks.acc.add_rgb(frame)
        if looks.analyse(sweep=look == len(starts) - 1):
            break
    if looks.result is None:
        return not_detected("the clip has no frames")
    looks.result.frames_used = looks.acc.frames
    return looks.result


def detect_watermark_file(path: Path | str, keys: Sequence[WatermarkKey], *, device: str | torch.device = "cpu",
                          window_s: float = WINDOW_S, max_frames: int = MAX_FRAMES) -> WatermarkResult:
    """`detect_watermark` on a video file (PyAV): windows spread over the whole clip, until decisive.

    The first window is the clip's first `window_s` seconds; longer clips get up to `MAX_LOOKS`
    windows in all (`looks_for`), read one after another into the same accumulator and analysed
    after each; reading stops at the first look that detects the mark and decodes its payload.
    """
    dev = torch.device(device)
    with _one_thread(dev):
        return _detect_file(Path(path), keys, dev, window_s, max_frames)


def _detect_file(path: Path, keys: Sequence[WatermarkKey], dev: torch.device, window_s: float,
                 max_frames: int) -> WatermarkResult:
    """`detect_watermark_file` proper."""
    if not keys:
        return not_detected("no watermark keys")
    container = open_video(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        starts = looks_for(clip_duration(container, stream, fps), window_s)
        looks = Looks(keys, dev, len(starts))
        reader = WindowReader(path, container, stream, fps)
        try:
            for look, start in enumerate(starts):
                for luma, size in reader.window(start, window_s, max_frames):
                    if min(size) < MIN_SIDE:
                        return not_detected(f"frames are {size[1]}x{size[0]}, below the {MIN_SIDE}px minimum")
                    looks.acc.add_luma(torch.from_numpy(luma.astype(np.float32)), size)
                if looks.analyse(sweep=look == len(starts) - 1):  # the sweep once, on the whole sum
                    break
        except (av.error.FFmpegError, ValueError) as exc:
            raise decode_error(path, exc) from None
    finally:
        container.close()
    if looks.result is None:
        raise InvalidVideo(f"{path}: the video stream holds no decodable frame")
    looks.result.frames_used = looks.acc.frames
    return looks.result
