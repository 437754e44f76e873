"""Analytic text-video alignment checker for the default model's world (no learned weights).

It reads a clip the way a person would check a caption: the background is the border's colour, the
object is whatever differs from it, its colour is the mask's mean colour, its direction is where the
mask's centroid goes, and its shape is how much of its bounding box it fills (square 1.0, circle
pi/4, triangle 1/2). Works on clips of any size (it rescales to 64x64 first).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from generator.training.data import BACKGROUNDS, COLOURS, Combo

FOREGROUND_DISTANCE = 0.35  # RGB distance (0..1 per channel) from the background that counts as object
MIN_OBJECT_PIXELS = 12  # at 64x64; fewer means "no object in this frame"
# Fill-ratio boundaries between triangle (0.5), circle (0.79) and square (1.0), from real clips.
TRIANGLE_CIRCLE = 0.64
CIRCLE_SQUARE = 0.89


@dataclass(frozen=True)
class Reading:
    """What the checker sees in a clip; None where it sees nothing it can name."""

    colour: str | None
    shape: str | None
    direction: str | None
    background: str

    def matches(self, combo: Combo) -> dict[str, bool]:
        """Per-attribute agreement with the caption, plus `all`."""
        got = {
            "colour": self.colour == combo.colour,
            "background": self.background == combo.background,
            "direction": self.direction == combo.direction,
            "shape": self.shape == combo.shape,
        }
        got["all"] = all(got.values())
        return got


def _nearest(rgb: np.ndarray, table: dict[str, tuple[int, int, int]]) -> str:
    names = list(table)
    refs = np.asarray([table[n] for n in names], np.float32) / 255.0
    return names[int(np.argmin(((refs - rgb[None]) ** 2).sum(axis=1)))]


def _to_64(frames: np.ndarray) -> np.ndarray:
    t, h, w, _ = frames.shape
    x = frames.astype(np.float32) / 255.0
    if h % 64 == 0 and w % 64 == 0 and (h, w) != (64, 64):
        x = x.reshape(t, 64, h // 64, 64, w // 64, 3).mean(axis=(2, 4))
    elif (h, w) != (64, 64):
        ys = (np.arange(64) * h // 64).clip(0, h - 1)
        xs = (np.arange(64) * w // 64).clip(0, w - 1)
        x = x[:, ys][:, :, xs]
    return x


def read_clip(frames: np.ndarray) -> Reading:
    """Read a T x H x W x 3 uint8 clip."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected T x H x W x 3 frames, got shape {frames.shape}")
    x = _to_64(frames)
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1).reshape(-1, 3)
    bg_rgb = np.median(border, axis=0)
    background = _nearest(bg_rgb, BACKGROUNDS)
    mask = np.sqrt(((x - bg_rgb) ** 2).sum(axis=-1)) > FOREGROUND_DISTANCE  # T x 64 x 64
    areas = mask.sum(axis=(1, 2))
    valid = np.flatnonzero(areas >= MIN_OBJECT_PIXELS)
    if valid.size == 0:
        return Reading(None, None, None, background)
    colour = _nearest(x[mask].mean(axis=0), COLOURS)

    ratios = []
    centroids = []
    yy, xx = np.mgrid[0:64, 0:64]
    for t in valid:
        m = mask[t]
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
        ratios.append(m.sum() / box)
        centroids.append((xx[m].mean(), yy[m].mean()))
    fill = float(np.median(ratios))
    shape = "triangle" if fill < TRIANGLE_CIRCLE else "circle" if fill < CIRCLE_SQUARE else "square"

    direction = None
    if valid.size >= 2:
        # A line through the track is steadier than first-minus-last when a frame is noisy.
        ts = valid.astype(np.float64)
        cx, cy = np.asarray(centroids).T
        vx = np.polyfit(ts, cx, 1)[0]
        vy = np.polyfit(ts, cy, 1)[0]
        if max(abs(vx), abs(vy)) * (ts[-1] - ts[0]) >= 4.0:  # moved at least 4 px over the clip
            if abs(vx) >= abs(vy):
                direction = "right" if vx > 0 else "left"
            else:
                direction = "down" if vy > 0 else "up"
    return Reading(colour, shape, direction, background)


def frame_stability(frames: np.ndarray) -> dict[str, bool]:
    """Is the clip stable: an object in the last frame as in the first, and one colour in every frame?

    `one_colour`: every frame where an object is seen reads the same palette colour (an object that
    turns from red to brown mid-clip fails); `last_frame_object`: the last frame still shows one (a
    collapsed last frame fails).
    """
    x = _to_64(frames)
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1).reshape(-1, 3)
    bg_rgb = np.median(border, axis=0)
    mask = np.sqrt(((x - bg_rgb) ** 2).sum(axis=-1)) > FOREGROUND_DISTANCE
    colours = {_nearest(x[t][mask[t]].mean(axis=0), COLOURS) for t in range(len(x))
               if mask[t].sum() >= MIN_OBJECT_PIXELS}
    return {"one_colour": len(colours) == 1, "last_frame_object": bool(mask[-1].sum() >= MIN_OBJECT_PIXELS)}


def score_clips(clips: list[tuple[np.ndarray, Combo]]) -> dict[str, float]:
    """Fraction of clips whose reading agrees with their caption, per attribute and for all four."""
    keys = ("colour", "background", "direction", "shape", "all")
    if not clips:
        return dict.fromkeys(keys, 0.0)
    hits = {k: 0 for k in keys}
    for frames, combo in clips:
        for k, ok in read_clip(frames).matches(combo).items():
            hits[k] += int(ok)
    return {k: hits[k] / len(clips) for k in keys}
