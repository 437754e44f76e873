"""The visible AI-disclosure label, burned into every frame before the invisible mark.

Why here, and why before the mark: EU AI Act Art. 50 and the Commission's Code of Practice on
marking and labelling ask for a visible "AI" label at first exposure beside the two
machine-readable layers (the C2PA manifest and the watermark). Burning the label in first means
the watermark and the fingerprints are computed over the labelled frames, so the clip people see
is exactly the clip the ledger vouches for.

Modes, weakest to strongest (a client overlay or `credence generate --label` may only move right):

* `off`: no label;
* `corner`: a small "AI" mark in the chosen corner;
* `badge`: the label's text in a rounded box in the chosen corner;
* `moving`: the same badge drifting around the frame over time (as Sora 2 does with its
  download badge), so that cropping one corner does not remove it.

The label is rendered once per frame size (Pillow's scalable default font: no font files, no
downloads) into a premultiplied RGBA patch, then alpha-blended into each frame: per frame it costs
one small integer blend, not a text layout. This module knows nothing of policies: it takes a
plain `LabelSpec` (the moderation policy's `label:` section, converted by `credence`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: The modes, weakest first: their order is the strength order overlays are checked against.
MODES = ("off", "corner", "badge", "moving")
#: Where a static label sits (a moving badge starts there).
POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right")
#: What a `corner` label says, whatever the text: the short form the Code of Practice's icons use.
CORNER_TEXT = "AI"
#: The smallest label height in pixels: below it the text is no longer legible (a 256x256 clip at
#: size 0.06 would get a 15 px badge; it gets this instead: Tesseract reads 24 px badges on every frame).
MIN_HEIGHT_PX = 24
#: Longest label text a policy may set (it must fit a 256 px wide frame).
MAX_TEXT_CHARS = 40
#: How far a moving badge travels per second, as a share of the free width and height; the two
#: periods differ so that its path does not repeat quickly.
DRIFT_PER_SECOND = (0.22, 0.31)


def strength(mode: str) -> int:
    """The rank of a mode in `MODES` (ValueError for an unknown one)."""
    if mode not in MODES:
        raise ValueError(f"label mode {mode!r} is not one of {', '.join(MODES)}")
    return MODES.index(mode)


@dataclass(frozen=True)
class LabelSpec:
    """What label to burn in: the policy's `label:` section, with `{client}` already filled in.

    `size` is the label's height as a share of the frame's short side (never under
    `MIN_HEIGHT_PX`); `opacity` scales the whole label (box and text).
    """

    mode: str = "off"
    text: str = "AI-generated"
    position: str = "top-right"
    size: float = 0.06
    opacity: float = 0.85

    def __post_init__(self) -> None:
        strength(self.mode)
        if self.position not in POSITIONS:
            raise ValueError(f"label position {self.position!r} is not one of {', '.join(POSITIONS)}")
        if not 0.0 < self.size <= 0.5:
            raise ValueError(f"label size {self.size} must be in (0, 0.5]")
        if not 0.0 < self.opacity <= 1.0:
            raise ValueError(f"label opacity {self.opacity} must be in (0, 1]")

    @property
    def enabled(self) -> bool:
        """Whether anything is drawn."""
        return self.mode != "off"

    @property
    def shown_text(self) -> str:
        """The words a viewer sees (`corner` always shows "AI")."""
        if self.mode == "off":
            return ""
        return CORNER_TEXT if self.mode == "corner" else self.text

    def with_client(self, client: str | None) -> LabelSpec:
        """The spec with `{client}` replaced by the client's display name (dropped when there is none)."""
        if "{client}" not in self.text:
            return self
        text = self.text.replace("{client}", (client or "").strip())
        text = " ".join(text.split()).strip(" ·|-—:,/")
        return replace(self, text=text or CORNER_TEXT)

    def record(self) -> dict[str, str]:
        """What the manifest and the ledger keep about the label: its mode and the words shown."""
        return {"mode": self.mode, "text": self.shown_text, "position": self.position}


@dataclass(frozen=True)
class RenderedLabel:
    """A label drawn once for one frame size: a premultiplied patch and where it goes on each frame."""

    premultiplied: np.ndarray  # h x w x 3 uint16: colour x alpha (0..255*255)
    inverse_alpha: np.ndarray  # h x w x 1 uint16: 255 - alpha
    spec: LabelSpec
    frame_size: tuple[int, int]  # (width, height)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the patch."""
        return self.premultiplied.shape[1], self.premultiplied.shape[0]

    def origin(self, index: int, fps: float) -> tuple[int, int]:
        """Top-left corner of the patch on frame `index` (static for corner and badge)."""
        width, height = self.frame_size
        w, h = self.size
        margin = _margin(width, height)
        free_x, free_y = max(0, width - w - 2 * margin), max(0, height - h - 2 * margin)
        right, bottom = self.spec.position.endswith("right"), self.spec.position.startswith("bottom")
        if self.spec.mode != "moving":
            return margin + (free_x if right else 0), margin + (free_y if bottom else 0)
        # A triangle wave per axis, started at the spec's corner so that frame 0 shows the label
        # where a static one would be; the two axes have different periods.
        seconds = index / fps if fps > 0 else float(index)
        fx = _triangle(seconds * DRIFT_PER_SECOND[0] + (1.0 if right else 0.0))
        fy = _triangle(seconds * DRIFT_PER_SECOND[1] + (1.0 if bottom else 0.0))
        return margin + round(fx * free_x), margin + round(fy * free_y)

    def apply(self, frame: np.ndarray, index: int, fps: float) -> np.ndarray:
        """A copy of `frame` (uint8 HxWx3) with the label blended in."""
        out = np.array(frame, dtype=np.uint8, copy=True)
        x, y = self.origin(index, fps)
        w, h = self.size
        patch = out[y:y + h, x:x + w]
        ph, pw = patch.shape[:2]
        blended = (patch.astype(np.uint16) * self.inverse_alpha[:ph, :pw] + self.premultiplied[:ph, :pw] + 127) // 255
        patch[...] = blended.astype(np.uint8)
        return out


def _triangle(phase: float) -> float:
    """0 → 1 → 0 over two units of phase."""
    phase = phase % 2.0
    return phase if phase <= 1.0 else 2.0 - phase


def _margin(width: int, height: int) -> int:
    return max(4, round(0.025 * min(width, height)))


def label_height(spec: LabelSpec, width: int, height: int) -> int:
    """The label's height in pixels on a `width` x `height` frame."""
    return max(MIN_HEIGHT_PX, round(spec.size * min(width, height)))


@lru_cache(maxsize=64)
def render_label(spec: LabelSpec, width: int, height: int) -> RenderedLabel:
    """Draw `spec` for frames of `width` x `height` (cached: one drawing per size and spec).

    White text on a dark rounded box with a light rim: legible on dark, light and busy frames
    alike. The text shrinks when it would not fit 90% of the frame's width.
    """
    if not spec.enabled:
        raise ValueError("a label with mode 'off' draws nothing")
    text = spec.shown_text
    box_h = min(label_height(spec, width, height), height - 2 * _margin(width, height))
    font_px = max(8, round(box_h * 0.62))
    max_w = int(0.9 * width) - 2 * _margin(width, height)
    while True:
        font = ImageFont.load_default(size=font_px)
        left, _top, right, _bottom = font.getbbox(text)
        text_w, pad = right - left, max(3, round(box_h * 0.35))
        if text_w + 2 * pad <= max_w or font_px <= 8:
            break
        font_px -= 1
    box_w = min(max_w, text_w + 2 * pad)
    # Drawn at 4x and reduced: smooth rounded corners and rim at any size.
    k = 4
    canvas = Image.new("RGBA", (box_w * k, box_h * k), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    radius = box_h * k // (2 if spec.mode == "corner" else 3)
    rim = max(k, round(box_h * k / 16))
    draw.rounded_rectangle((0, 0, box_w * k - 1, box_h * k - 1), radius=radius, fill=(255, 255, 255, 150))
    draw.rounded_rectangle((rim, rim, box_w * k - 1 - rim, box_h * k - 1 - rim), radius=max(1, radius - rim),
                           fill=(12, 12, 16, 235))
    big = ImageFont.load_default(size=font_px * k)
    bl, bt, br, bb = big.getbbox(text)
    draw.text(((box_w * k - (br - bl)) / 2 - bl, (box_h * k - (bb - bt)) / 2 - bt), text, font=big,
              fill=(255, 255, 255, 255))
    small = np.asarray(canvas.resize((box_w, box_h), Image.Resampling.LANCZOS), dtype=np.float32)
    alpha = small[..., 3:4] / 255.0 * spec.opacity
    colour = small[..., :3]
    premultiplied = np.rint(colour * alpha * 255.0).astype(np.uint16)
    inverse = (255 - np.rint(alpha * 255.0)).astype(np.uint16)
    return RenderedLabel(premultiplied, inverse, spec, (width, height))


def burn_in(frames: Iterable[np.ndarray], spec: LabelSpec | None, fps: float) -> Iterator[np.ndarray]:
    """`frames` with the label blended into each (unchanged when the spec is None or `off`)."""
    if spec is None or not spec.enabled:
        yield from frames
        return
    rendered: RenderedLabel | None = None
    for index, frame in enumerate(frames):
        height, width = frame.shape[:2]
        if rendered is None or rendered.frame_size != (width, height):
            rendered = render_label(spec, width, height)
        yield rendered.apply(frame, index, fps)

