"""Credence's keyed invisible video watermark: a 64-bit payload that survives platforms' edits.

A keyed pseudo-random tile of ±1 cells (a quarter sync, the rest a CRC-32-protected,
convolutionally coded 64-bit payload) is repeated over the luma of every frame, shaped by a
perceptual (JND) mask, at a strength set per clip from a quality range (Y-PSNR 42-47.5 dB; lower
for frames under 640x360) and how hard the picture makes the mark to read. The detector reads
windows spread over the clip, averages them, reads the tile's lattice from the autocorrelation
(undoing rescaling, reframing and small rotations), folds the frame onto one tile (undoing crops)
and correlates with the key's sync cells at every cyclic shift; its p-value is an analytic bound
that holds for any content.
See `detect.py` for the steps (`windows.py`, `lattice.py`, `statistics.py` hold them) and `embed.py`
for the masking.
"""

from .detect import DETECTION_P, WatermarkResult, detect_watermark, detect_watermark_file
from .ecc import PAYLOAD_BITS
from .embed import MIN_SIDE, WatermarkEmbedder, WatermarkError
from .layout import ALGORITHM, WatermarkKey

__all__ = [
    "ALGORITHM",
    "DETECTION_P",
    "MIN_SIDE",
    "PAYLOAD_BITS",
    "WatermarkEmbedder",
    "WatermarkError",
    "WatermarkKey",
    "WatermarkResult",
    "detect_watermark",
    "detect_watermark_file",
]
