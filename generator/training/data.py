"""Procedural training data for the default model: one coloured shape moving over a flat background.

The motion is deliberately easy to learn: shapes are large (about a third of the frame), move at a
constant 2 px per frame along one axis, and start on the side opposite their direction with a few
pixels of jitter, so that the first frame already hints at the direction and a small model can spend
its capacity on colour, shape and composition. Everything here is pure numpy and deterministic
given a seed.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Object colours and backgrounds (RGB, 0-255). Colours are far apart so the analytic scorer can tell
# them apart through blur; the scorer uses the same tables.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
    "magenta": (220, 40, 220),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (10, 10, 10),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "blue": (40, 80, 230),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
# Unit displacement per direction in (x, y) image coordinates (y grows downwards).
DIRECTION_VECTORS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}

NUM_FRAMES = 17  # 4k+1, what the Wan VAE's 4x temporal compression needs
SIZE = 64
SPEED = 2.0  # pixels per frame
ORTHO_JITTER = 10  # pixels either side of the centre line, across the motion
ALONG_JITTER = 3  # pixels either side of the nominal start, along the motion
SUPERSAMPLE = 4  # sub-pixel samples per axis for anti-aliased edges


@dataclass(frozen=True, order=True)
class Combo:
    """One caption's attributes."""

    colour: str
    shape: str
    direction: str
    background: str

    @property
    def caption(self) -> str:
        return caption(self)


def caption(combo: Combo) -> str:
    """The training caption for a combination, the same template the README documents."""
    return f"a {combo.colour} {combo.shape} moving {combo.direction} on a {combo.background} background"


def all_combos() -> list[Combo]:
    """Every drawable combination, skipping an object the colour of its background."""
    return [
        Combo(c, s, d, b)
        for c, s, d, b in itertools.product(COLOURS, SHAPES, DIRECTIONS, BACKGROUNDS)
        if c != b
    ]


def _held_out() -> tuple[Combo, ...]:
    # A fixed ~10% sample; the seed is part of the contract (bench and README name these).
    combos = all_combos()
    picked = random.Random(20261005).sample(combos, round(len(combos) * 0.10))
    return tuple(sorted(picked))


HELD_OUT: tuple[Combo, ...] = _held_out()
TRAIN_COMBOS: tuple[Combo, ...] = tuple(c for c in all_combos() if c not in set(HELD_OUT))

VOCABULARY: tuple[str, ...] = tuple(
    dict.fromkeys(["a", "moving", "on", "background", *COLOURS, *SHAPES, *DIRECTIONS, *BACKGROUNDS])
)


def _coverage(shape: str, cx: float, cy: float, size: int) -> np.ndarray:
    """Anti-aliased coverage (0..1) of one shape centred at (cx, cy) on a size x size frame."""
    s = SUPERSAMPLE
    grid = (np.arange(size * s, dtype=np.float32) + 0.5) / s
    x = grid[None, :] - cx
    y = grid[:, None] - cy
    if shape == "circle":
        inside = x * x + y * y <= 10.0**2
    elif shape == "square":
        inside = (np.abs(x) <= 9.0) & (np.abs(y) <= 9.0)
    elif shape == "triangle":
        # Apex up, base down: 24 wide, 22 tall, centred on its bounding box.
        half_w, half_h = 12.0, 11.0
        frac = (y + half_h) / (2 * half_h)  # 0 at the apex, 1 at the base
        inside = (frac >= 0) & (frac <= 1) & (np.abs(x) <= half_w * frac)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return inside.reshape(size, s, size, s).mean(axis=(1, 3))


def start_centre(direction: str, along: int, ortho: int, size: int = SIZE, num_frames: int = NUM_FRAMES) -> tuple[
    float, float
]:
    """Where an object starts so that its whole path stays centred in the frame."""
    dx, dy = DIRECTION_VECTORS[direction]
    travel = SPEED * (num_frames - 1)
    mid = size / 2
    start_along = mid - travel / 2 + along  # along-axis coordinate in the direction of motion
    if dx:
        cx = mid + dx * (start_along - mid)
        cy = mid + ortho
    else:
        cy = mid + dy * (start_along - mid)
        cx = mid + ortho
    return cx, cy


@lru_cache(maxsize=256)
def motion_mask(shape: str, direction: str, along: int, ortho: int, size: int = SIZE,
                num_frames: int = NUM_FRAMES) -> np.ndarray:
    """Coverage of one shape over the whole clip, T x H x W float32; cached (positions are integers)."""
    cx, cy = start_centre(direction, along, ortho, size, num_frames)
    dx, dy = DIRECTION_VECTORS[direction]
    frames = [_coverage(shape, cx + dx * SPEED * t, cy + dy * SPEED * t, size) for t in range(num_frames)]
    mask = np.stack(frames).astype(np.float32)
    mask.setflags(write=False)
    return mask


def sample_position(rng: np.random.Generator, along_jitter: int = ALONG_JITTER,
                    ortho_jitter: int = ORTHO_JITTER) -> tuple[int, int]:
    """A random (along, ortho) jitter for one clip; the default model trains on a narrower range."""
    return int(rng.integers(-along_jitter, along_jitter + 1)), int(rng.integers(-ortho_jitter, ortho_jitter + 1))


def compose(mask: np.ndarray, combo: Combo) -> np.ndarray:
    """Paint a coverage mask: float32 T x H x W x 3 in 0..255."""
    bg = np.asarray(BACKGROUNDS[combo.background], np.float32)
    fg = np.asarray(COLOURS[combo.colour], np.float32)
    return bg + mask[..., None] * (fg - bg)


def render_clip(combo: Combo, rng: np.random.Generator | int | None = None, *, size: int = SIZE,
                num_frames: int = NUM_FRAMES) -> np.ndarray:
    """One clip as uint8 T x H x W x 3."""
    rng = np.random.default_rng(rng)
    along, ortho = sample_position(rng)
    mask = motion_mask(combo.shape, combo.direction, along, ortho, size, num_frames)
    return np.clip(np.rint(compose(mask, combo)), 0, 255).astype(np.uint8)


@lru_cache(maxsize=8192)
def pooled_motion_mask(shape: str, direction: str, along: int, ortho: int, factor: int = 4) -> np.ndarray:
    """`motion_mask` average-pooled by `factor`: what the default model's fixed latent sees (cached, small)."""
    mask = motion_mask(shape, direction, along, ortho)
    t, h, w = mask.shape
    pooled = mask.reshape(t, h // factor, factor, w // factor, factor).mean(axis=(2, 4)).astype(np.float32)
    pooled.setflags(write=False)
    return pooled
