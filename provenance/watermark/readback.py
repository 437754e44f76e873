"""The detector side of the publish read-back (`provenance.readback`): the released bytes, then a platform.

Read 1 is `detect_watermark_file` on the signed file, exactly as `credence verify` reads a clip.
Read 2 reads the platform copy the publisher encoded beside it (H.264 CRF 32, preset ultrafast,
at the clip's own size and frame rate, from the same marked frames, the first look window) the
same way. Both must decode the clip's own mark id, CRC intact, with something to spare: either
`MARGIN_DECADES` of p-value, or `HEADROOM_DB` of soft-decision headroom.

Why two measures of "to spare": the p-value a verifier reports is the smaller of two bounds, the
sync cells' statistic and "a word of the decoder's list passes the CRC-32" (`statistics.crc_log_p`).
The second stops at about 6e-8 for a one-look clip, 1.22 decades below the 1e-6 threshold, however
cleanly the payload decodes. A short or small clip whose sync cells fall short (1 s of 256x256, a
4 s 480x320 clip) can therefore never show 2 decades of p-value, although its payload decodes after
a CRF 32 re-encode with plenty left: before this rule the read-back refused 4-5 of 6 pieces of real
480x320 footage and most 1 s clips (issue 22 notes). For those, the margin is measured where
the decoder works: the soft channel values' correlation with the clip's own codeword, read as the
amplitude of an equivalent Gaussian channel, against the amplitude at which the list decoder
decodes half the time (`DECODE_AMPLITUDE`, simulated). 3 dB of headroom: the mark's amplitude could
fall to 0.71x before the payload is lost half the time.
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
#: A read that decodes the clip's own mark id passes with this much soft-decision headroom over
#: `DECODE_AMPLITUDE`, when its p-value cannot show `MARGIN_DECADES` (the CRC bound's floor).
HEADROOM_DB = 3.0


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

    def __init__(self, key: WatermarkKey, margin_decades: float = MARGIN_DECADES) -> None:
        self.key = key
        self.margin_decades = margin_decades
        self.platform_crf = PLATFORM_CRF
        self.platform_preset = PLATFORM_PRESET
        self.platform_seconds = WINDOW_S

    def read(self, path: Path, platform: Path, mark_id: int) -> ReadBack:
        """Both reads; `ok` when each decodes `mark_id` exactly with a margin (p-value or headroom) to spare."""
        start = time.perf_counter()
        released = detect_watermark_file(path, [self.key])
        m1, h1 = self._judge(released, mark_id)
        if not self._enough(m1, h1):
            return ReadBack(False, released.p_value, m1, _why("the released file", released.payload, mark_id, m1,
                                                              self.margin_decades, h1),
                            time.perf_counter() - start, h1)
        copy = detect_watermark_file(platform, [self.key])
        m2, h2 = self._judge(copy, mark_id)
        p_value, margin = max(released.p_value, copy.p_value), min(m1, m2)
        headroom = None if h1 is None or h2 is None else min(h1, h2)
        if not self._enough(m2, h2):
            return ReadBack(False, p_value, margin, _why(f"the clip after one H.264 CRF {self.platform_crf} re-encode",
                                                         copy.payload, mark_id, m2, self.margin_decades, h2),
                            time.perf_counter() - start, headroom)
        return ReadBack(True, p_value, margin, None, time.perf_counter() - start, headroom)

    @staticmethod
    def _judge(result: object, mark_id: int) -> tuple[float, float | None]:
        """(p-value margin in decades, soft headroom in dB or None) of one read against `mark_id`."""
        margin = margin_of(result.detected, result.payload, mark_id, result.log10_p,  # type: ignore[attr-defined]
                           DETECTION_P)
        if margin == -math.inf:
            return margin, None
        return margin, headroom_db(result.soft_bits, mark_id)  # type: ignore[attr-defined]

    def _enough(self, margin: float, headroom: float | None) -> bool:
        if margin == -math.inf:
            return False  # not detected, or not the clip's own mark id
        return margin >= self.margin_decades or (headroom is not None and headroom >= HEADROOM_DB)


def _why(where: str, payload: int | None, mark_id: int, margin: float, needed: float,
         headroom: float | None = None) -> str:
    if payload is None:
        return f"the watermark's payload could not be decoded from {where}"
    if payload != mark_id:
        return f"{where} decoded payload {payload:016x}, not the clip's mark id {mark_id:016x}"
    soft = f" and its payload decoded with {headroom:.1f} dB of headroom, not {HEADROOM_DB:.1f}" \
        if headroom is not None else ""
    return f"the watermark in {where} cleared the detection threshold by {margin:.1f} decades, not {needed:.1f}{soft}"
