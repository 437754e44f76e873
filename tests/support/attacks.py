"""Edits a platform or a re-uploader applies to a clip, for the detector benchmark and tests.

Each attack reads a clip and writes an edited copy with PyAV (always a fresh encode, so the
C2PA manifest is gone, as after any real re-upload). Frames are edited in RGB with numpy and PIL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from provenance.video import VideoWriter, frame_rate, iter_frames

Frames = Iterator[np.ndarray]


def _resize(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(frame).resize((max(2, width), max(2, height)), Image.Resampling.BILINEAR))


def centre_crop(fraction: float) -> Callable[[np.ndarray], np.ndarray]:
    """Keep the centred `fraction` of each side."""
    def edit(frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        ch, cw = round(h * fraction), round(w * fraction)
        y, x = (h - ch) // 2, (w - cw) // 2
        return frame[y:y + ch, x:x + cw]
    return edit


def scale(factor: float) -> Callable[[np.ndarray], np.ndarray]:
    """Resize both sides by `factor`."""
    def edit(frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        return _resize(frame, round(w * factor), round(h * factor))
    return edit


def letterbox(fraction: float) -> Callable[[np.ndarray], np.ndarray]:
    """Black bars: `fraction` of the height added above and below, in the same frame size."""
    def edit(frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        bar = round(h * fraction / 2)
        inner = _resize(frame, w, h - 2 * bar)
        out = np.zeros_like(frame)
        out[bar:bar + inner.shape[0]] = inner
        return out
    return edit


def hflip(frame: np.ndarray) -> np.ndarray:
    """Mirror left-right."""
    return np.ascontiguousarray(frame[:, ::-1])


def overlay(fraction: float) -> Callable[[np.ndarray], np.ndarray]:
    """An opaque grey box over `fraction` of the area, in the bottom-right corner (a sticker)."""
    def edit(frame: np.ndarray) -> np.ndarray:
        out = frame.copy()
        h, w = out.shape[:2]
        side = fraction ** 0.5
        out[h - round(h * side):, w - round(w * side):] = 200
        return out
    return edit


def reframe_vertical(frame: np.ndarray) -> np.ndarray:
    """A landscape clip reframed to 9:16 (the centred strip, full height); portrait to 16:9."""
    h, w = frame.shape[:2]
    if w >= h:
        cw = round(h * 9 / 16)
        x = (w - cw) // 2
        return frame[:, x:x + cw]
    ch = round(w * 9 / 16)
    y = (h - ch) // 2
    return frame[y:y + ch]


def brightness(delta: int) -> Callable[[np.ndarray], np.ndarray]:
    """Add `delta` to every channel, clipped."""
    def edit(frame: np.ndarray) -> np.ndarray:
        return np.clip(frame.astype(np.int16) + delta, 0, 255).astype(np.uint8)
    return edit


def screen_record(frame: np.ndarray) -> np.ndarray:
    """A phone filming a screen, roughly: 0.6× scale, blur, noise, slight gamma."""
    h, w = frame.shape[:2]
    small = _resize(frame, round(w * 0.6), round(h * 0.6)).astype(np.float32)
    blurred = (small + np.roll(small, 1, 0) + np.roll(small, 1, 1) + np.roll(small, -1, 0)) / 4
    noisy = blurred + np.random.default_rng(0).normal(0, 4, blurred.shape)
    return np.clip(255 * (np.clip(noisy, 0, 255) / 255) ** 0.9, 0, 255).astype(np.uint8)


def caption_band(fraction: float) -> Callable[[np.ndarray], np.ndarray]:
    """A burned-in subtitle: a dark band over the bottom `fraction` of the height, with white text."""
    from PIL import ImageDraw

    def edit(frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        band = max(2, round(h * fraction))
        out = frame.copy()
        out[h - band:] = (out[h - band:].astype(np.uint16) * 3 // 10).astype(np.uint8)  # 70 % black
        image = Image.fromarray(out)
        draw = ImageDraw.Draw(image)
        draw.text((round(w * 0.08), h - band + band // 4), "and that is how we got here, honestly",
                  fill=(255, 255, 255), font_size=max(8, band // 2))
        return np.asarray(image)
    return edit


#: name -> (per-frame edit or None, encoder options, (start s, length s) or None)
ATTACKS: dict[str, tuple[Callable[[np.ndarray], np.ndarray] | None, dict[str, object], tuple[float, float] | None]] = {
    "reencode_crf35": (None, {"crf": 35}, None),
    "h265_crf30": (None, {"codec": "libx265", "crf": 30}, None),
    "scale_0.5": (scale(0.5), {"crf": 28}, None),
    "scale_0.25": (scale(0.25), {"crf": 28}, None),
    "crop_90": (centre_crop(0.9), {"crf": 23}, None),
    "crop_80": (centre_crop(0.8), {"crf": 23}, None),
    "crop_70": (centre_crop(0.7), {"crf": 23}, None),
    "letterbox_15": (letterbox(0.15), {"crf": 23}, None),
    "hflip": (hflip, {"crf": 23}, None),
    "overlay_25": (overlay(0.25), {"crf": 23}, None),
    "reframe_9x16": (reframe_vertical, {"crf": 23}, None),
    "brightness_+30": (brightness(30), {"crf": 23}, None),
    "screen_record": (screen_record, {"crf": 30}, None),
    "webm_vp9": (None, {"codec": "libvpx-vp9", "crf": 35}, None),
    "subclip_3s": (None, {"crf": 23}, (1.0, 3.0)),
    "h265_crf32": (None, {"codec": "libx265", "crf": 32}, None),
    "caption_band": (caption_band(0.18), {"crf": 23}, None),
    "speed_1.25": (None, {"crf": 23, "speed": 1.25}, None),
}

#: Attack families and the share-identified target of each (issue 6).
FAMILY = {
    "reencode_crf35": "codec", "h265_crf30": "codec", "webm_vp9": "codec", "scale_0.5": "scaling",
    "scale_0.25": "scaling", "crop_90": "crop", "crop_80": "crop", "crop_70": "crop",
    "letterbox_15": "pad", "hflip": "flip", "overlay_25": "overlay", "reframe_9x16": "crop",
    "brightness_+30": "colour", "screen_record": "screen", "subclip_3s": "subclip",
    "h265_crf32": "codec", "caption_band": "overlay", "speed_1.25": "speed",
}
TARGET = {"codec": 0.99, "scaling": 0.99, "crop": 0.95, "flip": 0.95, "pad": 0.95, "overlay": 0.95,
          "subclip": 0.90, "colour": 0.95, "screen": 0.90, "speed": 0.95}


def _selected(frames: Frames, fps: float, window: tuple[float, float] | None) -> Frames:
    if window is None:
        yield from frames
        return
    start, length = round(window[0] * fps), round(window[1] * fps)
    for index, frame in enumerate(frames):
        if index >= start + length:
            return
        if index >= start:
            yield frame


def _sped(frames: Frames, speed: float) -> Frames:
    """Every frame shown at `speed` times the pace (frames dropped or repeated, rate unchanged)."""
    kept = list(frames)
    for k in range(int(len(kept) / speed)):
        yield kept[min(len(kept) - 1, round(k * speed))]


def apply_attack(name: str, source: Path, dest: Path) -> Path:
    """Write `source` edited by attack `name` to `dest` (suffix .webm for the VP9 attack)."""
    edit, options, window = ATTACKS[name]
    options = dict(options)
    speed = float(options.pop("speed", 1.0))  # type: ignore[arg-type]
    fps = frame_rate(source)
    if options.get("codec") == "libvpx-vp9":
        dest = dest.with_suffix(".webm")
    frames = _selected(iter_frames(source), fps, window)
    if speed != 1.0:
        frames = _sped(frames, speed)
    options = {"preset": "veryfast", **options} if options.get("codec", "libx264") == "libx264" else options
    with VideoWriter(dest, fps, **options) as writer:  # type: ignore[arg-type]
        for frame in frames:
            out = edit(frame) if edit is not None else frame
            writer.write(out)
    return dest
