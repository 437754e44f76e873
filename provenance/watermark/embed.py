"""Embedding: add the keyed tile pattern to the luma, scaled by a cheap texture mask.

The same pattern goes into every frame (the mark is static in frame coordinates), so frame
drops, frame-rate changes and temporal crops cannot desynchronise it, and the detector can
average frames before it decodes. The delta is added equally to R, G and B, which changes luma
by the delta and leaves chroma alone.

Strength: `STRENGTH` grey levels RMS at mask 1. The mask follows local activity (the standard
deviation of luma in ~8 px neighbourhoods, computed on a 4× subsampled luma so it costs little)
between a floor, so flat skies still carry a faint mark, and a ceiling, so edges do not ring.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ProvenanceError
from . import ecc
from ._threads import one_thread as _one_thread
from .layout import WatermarkKey, cell_px, render_pattern, tile_values

STRENGTH = 1.6
MASK_FLOOR = 0.8
MASK_CEIL = 2.5
ACTIVITY_REF = 6.0  # luma std (grey levels) at which the mask reaches 1
MIN_SIDE = 64
#: Frames smaller than this area get a stronger mark (up to SMALL_BOOST×): robustness comes from
#: the number of pixels each bit is spread over, and a 256×192 clip has 1/19 of a 720p frame's.
REF_AREA = 1280 * 720
SMALL_BOOST = 1.6
_MASK_STRIDE = 4


class WatermarkError(ProvenanceError, ValueError):
    """A payload, key or frame the watermark cannot work with (a user's mistake: CLI exit 2)."""


def _activity_mask(frame: torch.Tensor) -> torch.Tensor:
    """Texture mask at full size from a strided luma (H×W float32 in [MASK_FLOOR, MASK_CEIL])."""
    h, w = frame.shape[:2]
    small = frame[::_MASK_STRIDE, ::_MASK_STRIDE].to(torch.float32)
    luma = (small[..., 0] * 0.299 + small[..., 1] * 0.587 + small[..., 2] * 0.114)[None, None]
    mean = F.avg_pool2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    sq = F.avg_pool2d(F.pad((luma - mean).square(), (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    mask = (sq.sqrt() / ACTIVITY_REF).clamp(MASK_FLOOR, MASK_CEIL)
    return F.interpolate(mask, size=(h, w), mode="bilinear", align_corners=False)[0, 0]


class WatermarkEmbedder:
    """Marks frames with one key and one 64-bit payload; deterministic and stateless per frame.

    The pattern for a frame size is rendered once and reused; nothing else is kept between
    frames, so memory does not grow with the clip.
    """

    def __init__(self, key: WatermarkKey, payload: int, *, device: str | torch.device = "cpu",
                 strength: float = STRENGTH) -> None:
        if not isinstance(payload, int | np.integer) or not 0 <= int(payload) < (1 << ecc.PAYLOAD_BITS):
            raise WatermarkError(f"payload must be a 64-bit unsigned integer, got {payload!r}")
        self.key = key
        self.payload = int(payload)
        self.device = torch.device(device)
        self.strength = strength
        self._tile = torch.from_numpy(tile_values(key.secret, self.payload)).to(self.device)
        self._pattern: torch.Tensor | None = None
        self._size: tuple[int, int] | None = None

    def pattern(self, height: int, width: int) -> torch.Tensor:
        """The pattern for this frame size at mask 1, in grey levels (rendered once per size)."""
        if self._size != (height, width) or self._pattern is None:
            boost = min(SMALL_BOOST, max(1.0, (REF_AREA / (height * width)) ** 0.25))
            pattern = render_pattern(self._tile, height, width, cell_px(height, width))
            self._pattern = pattern * (self.strength * boost)
            self._size = (height, width)
        return self._pattern

    def embed(self, frame: np.ndarray, index: int) -> np.ndarray:
        """Return `frame` (H×W×3 uint8 RGB) with the mark; `index` is unused: every frame is the same."""
        del index
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise WatermarkError(f"expected an H×W×3 uint8 RGB frame, got {getattr(frame, 'dtype', type(frame))} "
                                 f"{getattr(frame, 'shape', '')}")
        h, w = frame.shape[:2]
        if min(h, w) < MIN_SIDE:
            raise WatermarkError(f"a {w}x{h} frame is below the {MIN_SIDE}px minimum the watermark needs")
        with _one_thread(self.device):
            pixels = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device)
            delta = self.pattern(h, w) * _activity_mask(pixels)
            delta = torch.round(delta).to(torch.int16)
            out = (pixels.to(torch.int16) + delta[..., None]).clamp_(0, 255).to(torch.uint8)
            return out.cpu().numpy()
