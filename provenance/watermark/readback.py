"""The detector side of the publish read-back (`provenance.readback`): the released bytes, then a platform.

Read 1 is `detect_watermark_file` on the signed file, exactly as `credence verify` reads a clip.
Read 2 reads the platform copy the publisher encoded beside it (H.264 CRF 32, preset ultrafast,
at the clip's own size and frame rate, from the same marked frames, the first look window) the
same way. Both must decode the clip's own mark id, CRC intact, and keep something to spare on
both of the things a later read needs:

* the payload: `HEADROOM_DB` of soft-decision headroom (`headroom_db`: the soft channel values'
  correlation with the clip's own codeword, read as the amplitude of an equivalent Gaussian
  channel, against `DECODE_AMPLITUDE`, where the list decoder decodes half the time; 3 dB: the
  payload would survive the mark's amplitude falling to 0.71x);
* the sync that finds the tile: `MARGIN_DECADES` of p-value under the detection threshold, unless
  the payload's headroom is `STRONG_HEADROOM_DB` or more. A one-look clip's p-value stops at the
  CRC bound's 1.22 decades however cleanly its payload decodes (`statistics.crc_log_p`), so a short
  clip passes on a strong payload alone.

Why both (`python -m bench.watermark_headroom`, 2 keys x 9 clips: 6 pieces of real footage at 480 px,
3 synthetic 3 s clips at 256x192): the p-value alone admitted marks whose payload was fragile (a
piece at 4.0 decades with 2.8 dB of headroom, then lost to a resize; on the 3 s 256x192 test scene,
3 of 20 published at 2-5 decades with 1.6-2.1 dB were lost to one CRF 35 re-encode); the headroom
alone admitted first marks of the synthetic clips at 3.1-3.8 dB whose sync stopped at the CRC floor,
and a CRF 35 re-encode lost them. Both together published 16 of 18 (as many as the p-value rule) and
every published mark then read its exact payload after CRF 35, resize 0.5 and crop 0.9.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from ..readback import MARGIN_DECADES, ReadBack, margin_of
from . import ecc
from .detect import DETECTION_P, detect_watermark_file
from .embed import TARGET_PSNR, TARGET_SNR, WatermarkEmbedder
from .layout import WatermarkKey
from .statistics import WatermarkResult
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


#: The equivalent Gaussian amplitude (per channel bit, noise 1) at which the list decoder returns the
#: payload half the time: 0.7 -> 40 %, 0.8 -> 82 %, 0.9 -> 95 %, 1.0 -> 100 % of 60 random payloads each
#: (306 channel bits, list of 64; `python -m bench.watermark_headroom` re-derives it).
DECODE_AMPLITUDE = 0.72
#: A read passes when it decodes the clip's own mark id with this much soft-decision headroom over
#: `DECODE_AMPLITUDE` ...
HEADROOM_DB = 3.0
#: ... and `MARGIN_DECADES` of p-value, or this much headroom (the CRC bound's floor on short clips).
STRONG_HEADROOM_DB = 5.0


def headroom_db(soft: np.ndarray | None, mark_id: int) -> float | None:
    """dB by which the soft channel values' amplitude for `mark_id`'s codeword exceeds the decoder's need.

    r is the soft vector's normalised correlation with the codeword (+1 for a 0 bit, -1 for a 1);
    on a Gaussian channel of amplitude a, r = a / sqrt(1 + a^2), so a = r / sqrt(1 - r^2). None
    without soft values or when the correlation is not positive (nothing to measure a margin on).
    """
    if soft is None:
        return None
    values = np.asarray(soft, dtype=np.float64).ravel()
    signs = 1.0 - 2.0 * ecc.encode(mark_id).astype(np.float64)
    norm = float(np.sqrt(values @ values))
    if values.size != signs.size or norm == 0.0:
        return None
    r = float(values @ signs) / norm / math.sqrt(values.size)
    if r <= 0.0:
        return None
    amplitude = r / math.sqrt(max(1e-12, 1.0 - r * r))
    return 20.0 * math.log10(amplitude / DECODE_AMPLITUDE)


def stronger_embedder(key: WatermarkKey, mark_id: int) -> WatermarkEmbedder:
    """The embedder one strength step up (`STRENGTH_STEP_DB`), inside the same quality range."""
    return WatermarkEmbedder(key, mark_id, target_psnr=TARGET_PSNR - STRENGTH_STEP_DB,
                             target_snr=TARGET_SNR * 10 ** (STRENGTH_STEP_DB / 20), rail_floor=STRONGER_RAIL_FLOOR,
                             floor_step_db=STRENGTH_STEP_DB)


class KeyedReadBack:
    """`provenance.readback.MarkReader` for one watermark key."""

    def __init__(self, key: WatermarkKey, headroom: float = HEADROOM_DB,
                 margin_decades: float = MARGIN_DECADES, strong_headroom: float = STRONG_HEADROOM_DB) -> None:
        self.key = key
        self.headroom, self.margin_decades, self.strong_headroom = headroom, margin_decades, strong_headroom
        self.platform_crf = PLATFORM_CRF
        self.platform_preset = PLATFORM_PRESET
        self.platform_seconds = WINDOW_S

    def read(self, path: Path, platform: Path, mark_id: int) -> ReadBack:
        """Both reads; `ok` when each decodes `mark_id` exactly with headroom (and sync margin) to spare."""
        start = time.perf_counter()
        released = detect_watermark_file(path, [self.key])
        m1, h1 = self.judge(released, mark_id)
        if not self.passes(m1, h1):
            return ReadBack(False, released.p_value, m1, self._why("the released file", released.payload, mark_id,
                                                                   m1, h1), time.perf_counter() - start, h1)
        copy = detect_watermark_file(platform, [self.key])
        m2, h2 = self.judge(copy, mark_id)
        p_value, margin = max(released.p_value, copy.p_value), min(m1, m2)
        headroom = None if h1 is None or h2 is None else min(h1, h2)
        if not self.passes(m2, h2):
            return ReadBack(False, p_value, margin, self._why(f"the clip after one H.264 CRF {self.platform_crf} "
                                                              "re-encode", copy.payload, mark_id, m2, h2),
                            time.perf_counter() - start, headroom)
        return ReadBack(True, p_value, margin, None, time.perf_counter() - start, headroom)

    @staticmethod
    def judge(result: WatermarkResult, mark_id: int) -> tuple[float, float | None]:
        """(p-value margin in decades, soft headroom in dB or None) of one read against `mark_id`."""
        margin = margin_of(result.detected, result.payload, mark_id, result.log10_p, DETECTION_P)
        if margin == -math.inf:
            return margin, None
        return margin, headroom_db(result.soft_bits, mark_id)

    def passes(self, margin: float, headroom: float | None) -> bool:
        """Whether one read's (margin, headroom), as `judge` gives them, is enough to release on."""
        if margin == -math.inf or headroom is None or headroom < self.headroom:
            return False  # not detected, not the clip's own mark id, or a fragile payload
        return margin >= self.margin_decades or headroom >= self.strong_headroom

    def _why(self, where: str, payload: int | None, mark_id: int, margin: float, headroom: float | None) -> str:
        if payload is None:
            return f"the watermark's payload could not be decoded from {where}"
        if payload != mark_id:
            return f"{where} decoded payload {payload:016x}, not the clip's mark id {mark_id:016x}"
        if headroom is None:
            return f"the watermark's payload in {where} left no soft values to measure its headroom by"
        if headroom < self.headroom:
            return (f"the watermark's payload in {where} decoded with {headroom:.1f} dB of headroom, "
                    f"not {self.headroom:.1f}")
        return (f"the watermark in {where} cleared the detection threshold by {margin:.1f} decades, not "
                f"{self.margin_decades:.1f}, and its payload's {headroom:.1f} dB of headroom is under the "
                f"{self.strong_headroom:.1f} that would stand in for it")
