"""Issue 22's mark choices: small frames at 40 dB or more, and the per-clip tile geometry (v2 or v3).

The default model's frames come from `tests/data/readme_job_seed1.npz` (8 frames of the README's
main job, 256x256, the 64x64 latent upscaled); the codec is real (PyAV H.264).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from provenance.video import iter_frames, write_video
from provenance.watermark import WatermarkEmbedder, detect_watermark, detect_watermark_file
from provenance.watermark import embed as E
from provenance.watermark.readback import stronger_embedder

from .test_watermark_v2 import KEY, PAYLOAD, scene, y_psnr

README_FRAMES = Path(__file__).parent / "data" / "readme_job_seed1.npz"


def test_small_frames_are_first_marked_at_40_db_and_only_the_re_mark_goes_lower() -> None:
    assert E.mark_floor(256, 256) == E.SMALL_MARK_FLOOR == 40.0
    assert E.mark_floor(720, 1280) == E.PSNR_FLOOR  # large frames: the range's own floor, as before
    assert E.mark_floor(256, 256, 6.0) == pytest.approx(34.0, abs=1.5)
    # A 480x320 frame's range floor is already 39.9 dB: its re-mark goes one step (6 dB) under the
    # first mark's 40, else it would be no stronger (bench.watermark_headroom: 3 -> 10 of 12 pieces).
    assert E.psnr_floor(320, 480) > 39.5 and E.mark_floor(320, 480, 6.0) == pytest.approx(34.0, abs=0.1)
    assert E.mark_floor(720, 1280, 6.0) == E.PSNR_FLOOR and E.mark_floor(256, 256, 6.0) >= E.MIN_PSNR_FLOOR
    assert E.rail_floor_for(256, 256, 0.0) == E.SMALL_RAIL_FLOOR and E.rail_floor_for(720, 1280, 0.0) == 0.0
    assert stronger_embedder(KEY, PAYLOAD).floor_step_db > 0


def test_the_default_models_output_is_marked_at_40_db_and_reads_after_crf_35(tmp_path: Path) -> None:
    frames = list(np.load(README_FRAMES)["frames"])
    assert frames[0].shape == (256, 256, 3)
    embedder = WatermarkEmbedder(KEY, PAYLOAD)
    marked = [embedder.embed(f, i) for i, f in enumerate(frames)]
    assert min(y_psnr(m, f) for m, f in zip(marked, frames, strict=True)) >= E.SMALL_MARK_FLOOR - 0.3
    shipped = tmp_path / "shipped.mp4"
    write_video(shipped, iter(marked), 8.0, crf=18, preset="veryfast")
    platform = tmp_path / "crf35.mp4"
    write_video(platform, iter_frames(shipped), 8.0, crf=35, preset="veryfast")
    result = detect_watermark_file(platform, [KEY])
    assert result.detected and result.payload == PAYLOAD, result


def test_each_clip_gets_the_geometry_its_picture_reads_best_in_and_both_decode() -> None:
    smooth = scene(3, 640, 360, 6, grain=1.0)
    busy = [np.ascontiguousarray(f) for f in scene(4, 640, 360, 6, grain=28.0)]
    chosen = {}
    for name, frames in (("smooth", smooth), ("busy", busy)):
        embedder = WatermarkEmbedder(KEY, PAYLOAD)
        marked = [embedder.embed(f, i) for i, f in enumerate(frames)]
        chosen[name] = embedder.geometry
        result = detect_watermark(iter(marked), [KEY], fps=12.0)
        assert result.detected and result.payload == PAYLOAD, (name, result)
    assert chosen["smooth"] == 3  # coarse cells: what a codec keeps
    assert all(g in E.GEOMETRY_CHOICES for g in chosen.values())
    assert E.codec_survival(16.0) > E.codec_survival(11.25) > E.codec_survival(8.0)
    assert WatermarkEmbedder(KEY, PAYLOAD, geometry=2).geometry == 2  # a forced geometry is kept
