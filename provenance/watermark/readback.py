"""The detector side of the publish read-back (`provenance.readback`): the released bytes, then a platform.

Read 1 is `detect_watermark_file` on the signed file, exactly as `credence verify` reads a clip.
Read 2 reads the platform copy the publisher encoded beside it (H.264 CRF 32, preset ultrafast,
at the clip's own size and frame rate, from the same marked frames, the first look window) the
same way. Both must
decode the clip's own mark id, CRC intact, with `MARGIN_DECADES` of p-value to spare.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..readback import MARGIN_DECADES, ReadBack, margin_of
from .detect import DETECTION_P, detect_watermark_file
from .embed import TARGET_PSNR, TARGET_SNR, WatermarkEmbedder
from .layout import WatermarkKey
from .windows import WINDOW_S

#: The simulated platform: H.264 at this CRF, at the clip's own size and frame rate, over the
#: detector's first look window (`windows.WINDOW_S`). Preset ultrafast: it costs 0.9 s of CPU for
#: a 4 s 720p clip where veryfast costs 2.2 s (the read-back must stay under 15 % of a publish), and
#: it is the harsher of the two on the mark (no deblocking, coarser motion search: the bench clip
#: doorknob-hd read at p 1e-30.6 after it, 1e-32.8 after veryfast), so passing it is conservative.
PLATFORM_CRF = 32
PLATFORM_PRESET = "ultrafast"
#: The next strength step after a failed read-back: the reference 6 dB stronger (twice the amplitude:
#: a short clip that missed by a decade of margin reads) and a channel SNR aim raised to match;
#: the per-clip Y-PSNR range (`embed.psnr_floor`) still bounds the gain; a small frame's first-mark
#: floor (`embed.SMALL_MARK_FLOOR`, 40 dB) drops by the same step for it.
STRENGTH_STEP_DB = 6.0
#: The stronger re-mark also marks near black and white (half the mask there instead of none): a
#: clip on a plain black or white background (the default model draws many) has no other room for
#: the mark, and a one-sided mark that reads beats a generation that fails.
STRONGER_RAIL_FLOOR = 0.5


def stronger_embedder(key: WatermarkKey, mark_id: int) -> WatermarkEmbedder:
    """The embedder one strength step up (`STRENGTH_STEP_DB`), inside the same quality range."""
    return WatermarkEmbedder(key, mark_id, target_psnr=TARGET_PSNR - STRENGTH_STEP_DB,
                             target_snr=TARGET_SNR * 10 ** (STRENGTH_STEP_DB / 20), rail_floor=STRONGER_RAIL_FLOOR,
                             floor_step_db=STRENGTH_STEP_DB)


class KeyedReadBack:
    """`provenance.readback.MarkReader` for one watermark key."""

    def __init__(self, key: WatermarkKey, margin_decades: float = MARGIN_DECADES) -> None:
        self.key = key
        self.margin_decades = margin_decades
        self.platform_crf = PLATFORM_CRF
        self.platform_preset = PLATFORM_PRESET
        self.platform_seconds = WINDOW_S

    def read(self, path: Path, platform: Path, mark_id: int) -> ReadBack:
        """Both reads; `ok` when each decodes `mark_id` exactly with `margin_decades` to spare."""
        start = time.perf_counter()
        released = detect_watermark_file(path, [self.key])
        m1 = margin_of(released.detected, released.payload, mark_id, released.log10_p, DETECTION_P)
        if m1 < self.margin_decades:
            return ReadBack(False, released.p_value, m1, _why("the released file", released.payload, mark_id, m1,
                                                              self.margin_decades), time.perf_counter() - start)
        copy = detect_watermark_file(platform, [self.key])
        m2 = margin_of(copy.detected, copy.payload, mark_id, copy.log10_p, DETECTION_P)
        p_value, margin = max(released.p_value, copy.p_value), min(m1, m2)
        if m2 < self.margin_decades:
            return ReadBack(False, p_value, margin, _why(f"the clip after one H.264 CRF {self.platform_crf} re-encode",
                                                         copy.payload, mark_id, m2, self.margin_decades),
                            time.perf_counter() - start)
        return ReadBack(True, p_value, margin, None, time.perf_counter() - start)


def _why(where: str, payload: int | None, mark_id: int, margin: float, needed: float) -> str:
    if payload is None:
        return f"the watermark's payload could not be decoded from {where}"
    if payload != mark_id:
        return f"{where} decoded payload {payload:016x}, not the clip's mark id {mark_id:016x}"
    return f"the watermark in {where} cleared the detection threshold by {margin:.1f} decades, not {needed:.1f}"
