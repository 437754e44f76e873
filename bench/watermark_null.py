"""Watermark null benchmark: false positives on unmarked video, wrong-key p-values, 1080p speed.

    python -m bench.watermark_null --quick          # 20 windows, 400 null trials, 6 wrong-key windows (~1-2 min)
    python -m bench.watermark_null                  # 1000 windows × 10 keys = 10,000 null trials (~15-20 min)
    python -m bench.watermark_null --trials 20000 --windows 800

`bench/watermark.py` measures robustness (does a marked clip survive an edit?). This one measures the
two targets it does not: the false-positive side ("decision at p ≤ 1e-6 per clip; 0 detections in
≥ 10,000 unmarked 3 s windows; wrong key → uniform p-values") and speed at 1080p on this 2-core box.
Writes bench/results/watermark_null.json.

Null trials. A full detection of a 3 s window costs ~0.4-0.8 s here (the run prints the measured
figure), so 10,000 of them would take an hour or more. Almost all of that is key-free work: decoding, the
whitened accumulation, the autocorrelation lattice search and the folds (steps 1-3 of
`provenance/watermark/detect.py`); with the key, only the sync correlation by FFT over a 64×64 fold
remains (~1 ms). So each unmarked window is accumulated and folded once, exactly as `_analyse` does
(the same private helpers, same lattices, same fold variants, same union-bound count M), and then
tested against many independent random keys. That is an honest equivalent of testing the real key
on many windows because of how the p-value is built: for a fixed shift, z = Σ s_k g_k / ||g|| where
g (the folded content) does not depend on the key and the s_k are the key's sync signs, drawn by
HMAC from the secret. A key that did not mark the content is, to the detector, a fresh draw of
independent random signs, whether it is "our" key on someone else's video or a random key on any
video; the Hoeffding bound P(z ≥ t) ≤ exp(-t²/2) (and so p = min(1, M·exp(-z²/2))) holds for every
fixed content, over the key's randomness. Trials on the same window share content, so they are not
independent in every respect, but conditionally on the content they are independent key draws, and
the expected number of false detections is the sum of per-trial probabilities whatever the
dependence. The run checks the shortcut on every window: the real key goes through the full
`_analyse` and its z must equal the shortcut's z for that key; on the first few windows the public
`detect_watermark` (all frames, its own sampling) is also run and must agree. The real key's
full-detector results are reported as a separate line.

Windows: real clips under ../shared/data/videos (bench/watermark.py's REAL list plus c.mov; missing
files are skipped), bench/watermark.py's `procedural()` clips at two sizes, and seeded synthetic
content (1/f "pink" noise with pans and grain, and periodic tiled texture whose period is near the
mark's tile period, the hardest case for the lattice search), each cut at a random start and given a
random crop, rescale, flip, gain and JPEG pass. Only the frames the detector samples are built.

Uniformity. The detector's p is a Bonferroni bound over M ≈ 8-33k shifts/variants, so under the null
it is conservative (mostly exactly 1): P(p ≤ α) ≤ α is the property that matters, checked by the
fractions below 0.01/0.05/0.5 and a one-sided KS statistic D+ = max(F_n(α) - α) (≈ 0 when valid). A
two-sided KS against uniform is reported too and is large by design. To check that the statistic
itself is calibrated ("wrong key → uniform"), the z at one fixed shift (τ = 0 of the unattacked plain
fold, where no maximum is taken) is turned into p = Φ̄(z); under the null it is uniform, and its
two-sided KS statistic should be small. Flat windows (whitened content ≡ 0, z ≡ 0) are left out of
that check only.

Wrong key: windows marked with key A (in memory, no codec: the strongest mark, the hardest case for a
wrong key), detected through the public `detect_watermark` with key B (must never detect) and with A
(positive control, must detect), plus extra random wrong keys per window through the shortcut.

Speed (only the timed loops hold the machine's flock, `TIMING_LOCK`): `WatermarkEmbedder.embed` on
in-memory 1920×1080 frames after a warm-up (no codec); `detect_watermark_file` on a 10 s 1080p
24 fps H.264 MP4 (marked, written with `VideoWriter`, preset veryfast to keep the setup short; the
detector stops after its first 3 s look when that look decodes the payload); and an unmarked 30 s
1080p clip (every look is read: the worst case) against decoding all its frames. The watermark
code runs under `provenance.watermark._threads.one_thread`, i.e. one torch thread; FFmpeg
decoding and OpenCV use their own threads. The machine may be shared: load averages are recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import itertools
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import stats

from bench.watermark import FPS, REAL, bench_key, procedural, real_clip
from provenance.video import VideoWriter
from provenance.watermark import DETECTION_P, WatermarkEmbedder, WatermarkKey, detect_watermark, detect_watermark_file
from provenance.watermark import lattice as wm_lattice
from provenance.watermark import statistics as wm_statistics
from provenance.watermark import windows as wm_windows
from provenance.watermark._threads import one_thread
from provenance.watermark.embed import MIN_SIDE
from provenance.watermark.layout import TILE, cell_px

EXTRA_REAL = ["c2pa-fixtures/c.mov"]  # distinct real content beyond bench/watermark.py's list
REAL_SECONDS = 12.0  # longest stretch of a real clip kept in memory (start offsets are drawn inside it)
PROC_KINDS = ["flat", "dark", "low_texture", "fast_pan", "text", "scene_cut"]
SEEDED_SIZES = [(360, 640), (480, 854), (720, 1280), (1280, 720), (1080, 1080), (540, 960)]
REAL_KEY = bench_key()  # the key bench/watermark.py marks with at its default seed
CPU = torch.device("cpu")
RESULTS = Path(__file__).resolve().parent / "results"
#: The machine-wide lock every timed benchmark takes (see the helpers' rules): timings never overlap.
TIMING_LOCK = "/tmp/credence-timing.lock"


# -- windows -----------------------------------------------------------------------------------
@dataclass
class Window:
    """A 3 s stretch of some content; `frame(i)` builds frame i only when the detector samples it."""

    label: str
    group: str  # real | procedural | seeded
    fps: float
    length: int  # frames available from the window start
    frame: Callable[[int], np.ndarray]
    edits: dict[str, object] = field(default_factory=dict)

    def sampled(self) -> list[int]:
        """The frame indices `detect_watermark(frames, keys, fps)` accumulates (its own rule)."""
        window = max(1, round(wm_windows.WINDOW_S * self.fps))
        stride = max(1, math.ceil(window / wm_windows.MAX_FRAMES))
        return [i for i in range(min(window, self.length)) if i % stride == 0]

    def all_frames(self) -> list[np.ndarray]:
        """Every frame of the window (for the public-API cross-check)."""
        return [self.frame(i) for i in range(min(self.length, max(1, round(wm_windows.WINDOW_S * self.fps))))]


def random_edits(rng: np.random.Generator, shape: tuple[int, int]) -> dict[str, object]:
    """A random crop / rescale / flip / gain / JPEG, as platforms and re-uploads do to unmarked video."""
    h, w = shape
    edits: dict[str, object] = {}
    if rng.random() < 0.6:
        edits["crop"] = (float(rng.uniform(0.55, 0.95)), float(rng.random()), float(rng.random()))
    if rng.random() < 0.6:
        f = float(rng.uniform(0.5, 1.3))
        crop_f = edits["crop"][0] if "crop" in edits else 1.0  # type: ignore[index]
        f = min(f, 1920 / (max(h, w) * crop_f))  # stay ≤ 1080p-ish
        f = max(f, (MIN_SIDE + 8) / (min(h, w) * crop_f))
        edits["scale"] = f
    if rng.random() < 0.2:
        edits["hflip"] = True
    if rng.random() < 0.3:
        edits["gain"] = float(rng.uniform(0.6, 1.3))
    if rng.random() < 0.25:
        edits["jpeg"] = int(rng.integers(25, 91))
    return edits


def apply_edits(frame: np.ndarray, edits: dict[str, object]) -> np.ndarray:
    """The same edit on every frame of a window (a crop is fixed in frame coordinates)."""
    x = frame
    if "crop" in edits:
        f, fy, fx = edits["crop"]  # type: ignore[misc]
        h, w = x.shape[:2]
        ch, cw = max(MIN_SIDE, round(h * f)), max(MIN_SIDE, round(w * f))
        y0, x0 = round((h - ch) * fy), round((w - cw) * fx)
        x = x[y0:y0 + ch, x0:x0 + cw]
    if "scale" in edits:
        s = float(edits["scale"])  # type: ignore[arg-type]
        h, w = x.shape[:2]
        size = (max(MIN_SIDE, round(w * s)), max(MIN_SIDE, round(h * s)))
        method = Image.Resampling.LANCZOS if s < 1 else Image.Resampling.BICUBIC
        x = np.asarray(Image.fromarray(np.ascontiguousarray(x)).resize(size, method))
    if edits.get("hflip"):
        x = x[:, ::-1]
    if "gain" in edits:
        x = np.clip(x.astype(np.float32) * float(edits["gain"]), 0, 255).astype(np.uint8)  # type: ignore[arg-type]
    if "jpeg" in edits:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(x)).save(buf, "JPEG", quality=int(edits["jpeg"]))  # type: ignore[call-overload]
        x = np.asarray(Image.open(buf).convert("RGB"))
    x = np.ascontiguousarray(x)
    return x if x.flags.writeable else x.copy()  # torch.from_numpy warns on read-only PIL buffers


def clip_window(label: str, group: str, frames: Sequence[np.ndarray], fps: float, rng: np.random.Generator,
                *, edit: bool = True) -> Window:
    """A window of an in-memory clip at a random start, with random edits."""
    window = max(1, round(wm_windows.WINDOW_S * fps))
    start = int(rng.integers(0, max(0, len(frames) - window) + 1))
    edits = random_edits(rng, frames[0].shape[:2]) if edit else {}
    edits["start_s"] = round(start / fps, 2)
    return Window(label, group, fps, len(frames) - start, lambda i: apply_edits(frames[start + i], edits), edits)


def pink_field(h: int, w: int, beta: float, rng: np.random.Generator) -> np.ndarray:
    """1/f^β noise (natural images sit near β ≈ 2), periodic in both axes, std 1."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    f[0, 0] = 1.0
    spec = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f ** (beta / 2)
    spec[0, 0] = 0
    field_ = np.fft.irfft2(spec, s=(h, w))
    return (field_ / (field_.std() or 1.0)).astype(np.float32)


def seeded_window(seed: int, *, edit: bool = True) -> Window:
    """Synthetic content from a seed: panning 1/f noise ("pink") or periodic texture ("tiled").

    The tiled kind repeats a random texture with a period between half and twice the mark's own
    tile period, so the autocorrelation lattice search locks onto the content's lattice: the
    case where a detector that trusted the fold without the key would fire.
    """
    rng = np.random.default_rng(seed)
    h, w = SEEDED_SIZES[int(rng.integers(len(SEEDED_SIZES)))]
    fps = float(rng.choice([24.0, 25.0, 30.0, 60.0]))
    n = round(wm_windows.WINDOW_S * fps)
    kind = "tiled" if rng.random() < 0.4 else "pink"
    beta = float(rng.uniform(1.5, 2.5))
    still = rng.random() < 0.3
    vy, vx = (0.0, 0.0) if still else (float(rng.uniform(-3, 3)), float(rng.uniform(-5, 5)))
    grain = float(rng.uniform(0, 3))
    tint = rng.uniform(0.7, 1.3, 3).astype(np.float32)
    mean, contrast = float(rng.uniform(50, 190)), float(rng.uniform(10, 60))
    pad_y, pad_x = math.ceil(abs(vy) * n) + 2, math.ceil(abs(vx) * n) + 2
    if kind == "tiled":
        period = round(TILE * cell_px(h, w) * float(rng.uniform(0.5, 2.0)))
        tile = pink_field(period, period, beta, rng)
        reps_y, reps_x = (h + pad_y) // period + 2, (w + pad_x) // period + 2
        big = np.tile(tile, (reps_y, reps_x))[:h + pad_y, :w + pad_x]
    else:
        period = 0
        big = pink_field(h + pad_y, w + pad_x, beta, rng)
    big = big * contrast + mean
    chroma = np.asarray(Image.fromarray((rng.random((4, 6, 3)) * 40 - 20 + 128).astype(np.uint8))
                        .resize((w, h), Image.Resampling.BICUBIC)).astype(np.float32) - 128
    y0 = 0 if vy >= 0 else pad_y - 1
    x0 = 0 if vx >= 0 else pad_x - 1
    edits = random_edits(rng, (h, w)) if edit else {}

    def frame(i: int) -> np.ndarray:
        yy, xx = y0 + round(vy * i), x0 + round(vx * i)
        luma = big[yy:yy + h, xx:xx + w]
        if grain:
            luma = luma + np.random.default_rng((seed, i)).normal(0, grain, luma.shape).astype(np.float32)
        rgb = luma[..., None] * tint + chroma
        return apply_edits(np.clip(rgb, 0, 255).astype(np.uint8), edits)

    spec = {"kind": kind, "size": f"{w}x{h}", "fps": fps, "beta": round(beta, 2), "period": period,
            "pan": [round(vy, 2), round(vx, 2)], "grain": round(grain, 2), **edits}
    return Window(f"seed-{seed}-{kind}", "seeded", fps, n, frame, spec)


def load_sources(quick: bool, seed: int) -> tuple[dict[str, tuple[list[np.ndarray], float]],
                                                 dict[str, list[np.ndarray]]]:
    """Real clips (decoded once, ≤ 1280 px as bench/watermark.py does) and procedural clips."""
    real: dict[str, tuple[list[np.ndarray], float]] = {}
    for rel in (REAL[:3] if quick else REAL + EXTRA_REAL):
        got = real_clip(rel, REAL_SECONDS)
        if got and got[0]:
            real[Path(rel).stem] = got
    proc: dict[str, list[np.ndarray]] = {}
    sizes = [(640, 360)] if quick else [(640, 360), (1280, 720)]
    seconds = 3.5 if quick else 5.0
    for (w, h), kind in itertools.product(sizes, PROC_KINDS):
        proc[f"proc-{kind}-{w}x{h}"] = procedural(kind, seconds, width=w, height=h, seed=seed)
    return real, proc


def make_windows(count: int, real: dict, proc: dict, seed: int) -> list[Window]:
    """Half real, a fifth procedural, the rest seeded (real falls back to seeded when absent)."""
    rng = np.random.default_rng(seed)
    windows = []
    real_names, proc_names = sorted(real), sorted(proc)
    for w in range(count):
        slot = w % 10
        if slot < 5 and real_names:
            name = real_names[int(rng.integers(len(real_names)))]
            frames, fps = real[name]
            windows.append(clip_window(name, "real", frames, fps, rng))
        elif slot < 7:
            name = proc_names[int(rng.integers(len(proc_names)))]
            windows.append(clip_window(name, "procedural", proc[name], FPS, rng))
        else:
            windows.append(seeded_window(seed * 100_000 + w))
    return windows


# -- the detector, split into its key-free part and its per-key part ----------------------------
def accumulate(win: Window) -> wm_windows._Accumulator:
    """Steps 1 of the detector on the frames it would sample: whitened working-size luma."""
    acc = wm_windows._Accumulator(CPU)
    for i in win.sampled():
        acc.add_rgb(win.frame(i))
    return acc


def key_free(acc: wm_windows._Accumulator) -> tuple[list[torch.Tensor], int]:
    """Everything `_analyse` does before it looks at a key: lattices, folds, mirrored folds, the scale sweep.

    Calls the detector's own `key_free_variants` (the very code `_analyse` runs); returns the
    folded tiles the keys are correlated with and the union-bound count M for a single key and
    one look (a 3 s window is one look: `looks_for`).
    """
    assert acc.total is not None and acc.size is not None
    variants, tests = wm_lattice.key_free_variants(acc.total, acc.size, acc.kept)
    # The keyed scale sweep: `_analyse` runs it whenever the ordinary lattices decode no payload (on
    # unmarked video, always) and counts its tests always; its folds are key-free too.
    swept, sweep_tests = wm_statistics.sweep_variants(acc.total, acc.size)
    return variants + swept, tests + sweep_tests


def p_of(z: float, tests: int) -> float:
    """The detector's p-value for best z over `tests` shift/variant tests (as `_analyse` when no payload decodes:
    2·min(p_sync, 1), the factor 2 paying for the CRC test beside it)."""
    log_p = math.log(2.0) + min(wm_statistics._log_p(z, tests), 0.0)
    return float(min(1.0, math.exp(log_p))) if log_p < 700 else 1.0


class Spectra:
    """A window's folds stacked, with their spectra and their squares' spectra: the key-free half of `_zscores`.

    `_zscores(g, tpl)` is irfft2(conj(sync)·rfft2(g)) / sqrt(irfft2(conj(ind)·rfft2(g²))); the two
    rfft2s do not depend on the key, so they are taken once per window for every fold at once, and a
    key trial is two batched products and inverse FFTs (the sweep brings ~100-250 folds per window).
    """

    def __init__(self, variants: Sequence[torch.Tensor]) -> None:
        stack = torch.stack(list(variants)).to(torch.float64)
        self.n = stack.shape[-1]
        self.stack = stack
        self.g = torch.fft.rfft2(stack)
        self.g2 = torch.fft.rfft2(stack.square())


def key_trial(spectra: Spectra, tests: int, key: WatermarkKey) -> tuple[float, float, float]:
    """(z max, detector p, fixed-shift z) of one key against a window's folds (as `_zscores` on each)."""
    tpl = wm_statistics._templates(key, CPU)
    n = spectra.n
    num = torch.fft.irfft2(torch.conj(tpl.sync_spec) * spectra.g, s=(n, n))
    den = torch.fft.irfft2(torch.conj(tpl.ind_spec) * spectra.g2, s=(n, n))
    z = wm_statistics.zscores_from(num, den, spectra.stack)
    zmax = float(z.max())
    return zmax, p_of(zmax, tests), float(z[0, 0, 0])


def random_key(rng: np.random.Generator, label: str) -> WatermarkKey:
    return WatermarkKey(label, rng.bytes(32))


# -- statistics --------------------------------------------------------------------------------
def p_summary(p: np.ndarray) -> dict[str, object]:
    """Detections at the threshold, min p, tail fractions and KS statistics of detector p-values."""
    if p.size == 0:
        return {"n": 0}
    two = stats.kstest(p, "uniform")
    plus = stats.kstest(p, "uniform", alternative="greater")
    return {"n": int(p.size), "detections": int(np.sum(p <= DETECTION_P)), "min_p": float(p.min()),
            "frac_le_0.01": float(np.mean(p <= 0.01)), "frac_le_0.05": float(np.mean(p <= 0.05)),
            "frac_le_0.5": float(np.mean(p <= 0.5)), "frac_eq_1": float(np.mean(p >= 1.0)),
            "ks_two_sided": float(two.statistic), "ks_two_sided_p": float(two.pvalue),
            "ks_d_plus": float(plus.statistic), "ks_d_plus_p": float(plus.pvalue)}


def z0_summary(z0: np.ndarray) -> dict[str, object]:
    """Uniformity of the fixed-shift p = Φ̄(z): the calibration of the statistic itself."""
    if z0.size == 0:
        return {"n": 0}
    p = stats.norm.sf(z0)
    ks = stats.kstest(p, "uniform")
    return {"n": int(p.size), "z_mean": float(z0.mean()), "z_std": float(z0.std()),
            "frac_le_0.01": float(np.mean(p <= 0.01)), "frac_le_0.05": float(np.mean(p <= 0.05)),
            "frac_le_0.5": float(np.mean(p <= 0.5)), "ks_two_sided": float(ks.statistic),
            "ks_two_sided_p": float(ks.pvalue)}


def z_needed(tests: int) -> float:
    """The z at which a single-key detection with this many tests reaches p = DETECTION_P."""
    return math.sqrt(2 * (math.log(tests) - math.log(DETECTION_P)))


# -- part 1: null trials -----------------------------------------------------------------------
def null_trials(windows: list[Window], keys_per_window: int, verify: int, seed: int) -> dict[str, object]:
    """Every window: full detection with the real key, then `keys_per_window` random keys on its folds."""
    rng = np.random.default_rng(seed + 1)
    rows: list[dict[str, object]] = []
    zmax_all, p_all, z0_all, group_of = [], [], [], []
    real_p, real_z = [], []
    t_acc, t_full, t_keyfree, t_keys, t_build = [], [], [], [], []
    max_dz, public = 0.0, []
    flat_windows = 0
    for w, win in enumerate(windows):
        with one_thread(CPU):
            t0 = time.perf_counter()
            frames = {i: win.frame(i) for i in win.sampled()}
            t1 = time.perf_counter()
            acc = wm_windows._Accumulator(CPU)
            for i in win.sampled():
                acc.add_rgb(frames[i])
            t2 = time.perf_counter()
            assert acc.total is not None and acc.size is not None
            full = wm_statistics._analyse(acc.total, acc.size, [REAL_KEY], acc.frames, acc.kept)
            t3 = time.perf_counter()
            variants, tests = key_free(acc)
            spectra = Spectra(variants)
            t4 = time.perf_counter()
            zr, pr, _ = key_trial(spectra, tests, REAL_KEY)  # the shortcut must reproduce the full detector
            max_dz = max(max_dz, abs(zr - full.z_score))
            if abs(zr - full.z_score) > 1e-4 or (pr < 1.0 and abs(math.log(pr) - math.log(full.p_value)) > 1e-3):
                raise RuntimeError(f"shortcut disagrees with _analyse on {win.label}: z {zr} vs {full.z_score}")
            flat = all(float(g.abs().max()) == 0.0 for g in variants)
            flat_windows += flat
            for k in range(keys_per_window):
                zmax, p, z0 = key_trial(spectra, tests, random_key(rng, f"null-{w}-{k}"))
                zmax_all.append(zmax)
                p_all.append(p)
                group_of.append(win.group)
                if not flat:
                    z0_all.append(z0)
            t5 = time.perf_counter()
        t_build.append(t1 - t0)
        t_acc.append(t2 - t1)
        t_full.append(t3 - t2)
        t_keyfree.append(t4 - t3)
        t_keys.append(t5 - t4)
        real_p.append(full.p_value)
        real_z.append(full.z_score)
        if w < verify:  # the public API, fed every frame of the window, must say the same
            frames_all = win.all_frames()
            t6 = time.perf_counter()
            res = detect_watermark(frames_all, [REAL_KEY], win.fps)
            public.append({"label": win.label, "seconds": time.perf_counter() - t6, "p": res.p_value,
                           "z": res.z_score, "agrees": abs(res.z_score - full.z_score) < 1e-4})
            if abs(res.z_score - full.z_score) > 1e-4:
                raise RuntimeError(f"public detect_watermark disagrees on {win.label}: {res.z_score} vs {full.z_score}")
        rows.append({"label": win.label, "group": win.group, "size": f"{acc.size[1]}x{acc.size[0]}",
                     "frames": acc.frames, "variants": len(variants),
                     "tests": tests, "real_key_p": full.p_value, "real_key_z": full.z_score, "flat": flat,
                     "edits": win.edits})
        if (w + 1) % max(1, len(windows) // 10) == 0:
            print(f"  window {w + 1}/{len(windows)}: {len(p_all)} trials, min p {min(p_all):.3g}, "
                  f"max z {max(zmax_all):.2f}, load {os.getloadavg()[0]:.2f}", flush=True)
    p_arr, z0_arr, zmax_arr = np.array(p_all), np.array(z0_all), np.array(zmax_all)
    groups = np.array(group_of)
    by_group = {}
    for g in ("real", "procedural", "seeded"):
        sel = groups == g
        if sel.any():
            by_group[g] = {"windows": sum(1 for r in rows if r["group"] == g), "trials": int(sel.sum()),
                           "detections": int(np.sum(p_arr[sel] <= DETECTION_P)), "min_p": float(p_arr[sel].min()),
                           "max_z": float(zmax_arr[sel].max())}
    tests_all = [int(r["tests"]) for r in rows]  # type: ignore[call-overload]
    full_s = float(np.mean(np.array(t_acc) + np.array(t_full)))
    return {
        "windows": len(windows), "keys_per_window": keys_per_window, "trials": int(p_arr.size),
        "random_keys": summary_with_z(p_arr, zmax_arr), "fixed_shift": z0_summary(z0_arr),
        "flat_windows": flat_windows, "by_group": by_group,
        "real_key": {**p_summary(np.array(real_p)), "max_z": float(max(real_z))},
        "tests_per_key": {"min": min(tests_all), "max": max(tests_all),
                          "z_needed_min": z_needed(min(tests_all)), "z_needed_max": z_needed(max(tests_all))},
        "shortcut_max_abs_dz": max_dz, "public_api_checks": public,
        "timing_s": {"build_frames_mean": float(np.mean(t_build)), "accumulate_mean": float(np.mean(t_acc)),
                     "analyse_real_key_mean": float(np.mean(t_full)), "full_detection_mean": full_s,
                     "key_free_mean": float(np.mean(t_keyfree)),
                     "per_key_trial_mean": float(np.sum(t_keys) / max(1, p_arr.size)),
                     "full_detections_for_trials_min": full_s * p_arr.size / 60},
        "windows_detail": rows,
    }


def summary_with_z(p: np.ndarray, zmax: np.ndarray) -> dict[str, object]:
    out = p_summary(p)
    out["max_z"] = float(zmax.max()) if zmax.size else None
    return out


# -- part 2: wrong key -------------------------------------------------------------------------
def wrong_key(count: int, extra_keys: int, real: dict, proc: dict, seed: int) -> dict[str, object]:
    """Mark with key A, detect with key B through the public API; A must detect, B must not."""
    rng = np.random.default_rng(seed + 2)
    sources: list[tuple[str, str, Sequence[np.ndarray], float]] = []
    sources += [(name, "real", frames, fps) for name, (frames, fps) in sorted(real.items())]
    sources += [(name, "procedural", frames, FPS) for name, frames in sorted(proc.items()) if "640x360" in name]
    windows: list[Window] = []
    for w in range(count):
        if w % 4 == 3 or not sources:
            windows.append(seeded_window(seed * 100_000 + 90_000 + w, edit=False))
        else:
            name, group, frames, fps = sources[w % len(sources)]
            windows.append(clip_window(name, group, frames, fps, rng, edit=False))
    b_p, b_z, a_hits, a_payload_ok, extra_p, extra_z0, rows = [], [], 0, 0, [], [], []
    for w, win in enumerate(windows):
        key_a = random_key(rng, f"A-{w}")
        key_b = random_key(rng, f"B-{w}")
        payload = int(rng.integers(0, 2 ** 63)) * 2 + int(rng.integers(0, 2))
        embedder = WatermarkEmbedder(key_a, payload)
        marked = [embedder.embed(f, i) for i, f in enumerate(win.all_frames())]
        res_b = detect_watermark(marked, [key_b], win.fps)
        res_a = detect_watermark(marked, [key_a], win.fps)
        b_p.append(res_b.p_value)
        b_z.append(res_b.z_score)
        a_hits += int(res_a.detected)
        a_payload_ok += int(res_a.payload == payload)
        mwin = Window(win.label, win.group, win.fps, len(marked), lambda i, m=marked: m[i])
        with one_thread(CPU):
            variants, tests = key_free(accumulate(mwin))
            spectra = Spectra(variants)
            for k in range(extra_keys):
                _, p, z0 = key_trial(spectra, tests, random_key(rng, f"B-{w}-{k}"))
                extra_p.append(p)
                extra_z0.append(z0)
        rows.append({"label": win.label, "group": win.group, "size": f"{marked[0].shape[1]}x{marked[0].shape[0]}",
                     "p_key_b": res_b.p_value, "z_key_b": res_b.z_score, "p_key_a": res_a.p_value,
                     "z_key_a": res_a.z_score, "payload_ok": res_a.payload == payload, **win.edits})
    return {"windows": len(windows), "key_b": {**p_summary(np.array(b_p)), "max_z": float(max(b_z))},
            "key_a_detected": a_hits, "key_a_payload_exact": a_payload_ok,
            "extra_wrong_keys_per_window": extra_keys, "extra": p_summary(np.array(extra_p)),
            "extra_fixed_shift": z0_summary(np.array(extra_z0)), "windows_detail": rows}


# -- part 3: speed -----------------------------------------------------------------------------
def hd_frames(real: dict, count: int) -> list[np.ndarray]:
    """`count` distinct 1920×1080 frames: a real 720p clip upscaled, else a procedural pan."""
    src = real.get("doorknob-hd-no-bar")
    if src is None or src[0][0].shape[0] > src[0][0].shape[1]:
        return [f.copy() for f in procedural("fast_pan", count / FPS + 0.05, width=1920, height=1080)[:count]]
    frames = src[0]
    order = [i % (2 * len(frames) - 2) for i in range(count)]
    order = [i if i < len(frames) else 2 * len(frames) - 2 - i for i in order]  # ping-pong
    return [np.array(Image.fromarray(frames[i]).resize((1920, 1080), Image.Resampling.BICUBIC)) for i in order]


@contextlib.contextmanager
def timing_lock(path: str = TIMING_LOCK) -> Iterator[None]:
    """Hold the machine's shared timing lock (flock) while timing: no two timed runs overlap.

    Only the timed loops run under it; building the clips they time does not.
    """
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def speed(real: dict, embed_frames: int, work: Path) -> dict[str, object]:
    """Embed frames/s at 1080p (in memory) and seconds to detect a 10 s 1080p 24 fps MP4."""
    key = WatermarkKey("wm-speed", bytes(range(1, 33)))
    payload = 0x0123456789ABCDEF
    embedder = WatermarkEmbedder(key, payload)
    frames = hd_frames(real, embed_frames)
    for f in frames[:3]:  # warm-up: renders the 1080p pattern once, warms allocators
        embedder.embed(f, 0)
    per_frame = []
    with timing_lock():
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        for i, f in enumerate(frames):
            t = time.perf_counter()
            embedder.embed(f, i)
            per_frame.append(time.perf_counter() - t)
        embed_fps = len(frames) / (time.perf_counter() - t0)
        load_after_embed = os.getloadavg()

    seconds, fps = 10.0, 24.0
    clip = hd_frames(real, round(seconds * fps))
    path = work / "speed-1080p-10s.mp4"
    t0 = time.perf_counter()
    with VideoWriter(path, fps, crf=18, preset="veryfast") as writer:
        for i, f in enumerate(clip):
            writer.write(embedder.embed(f, i))
    write_s = time.perf_counter() - t0
    del clip
    runs = []
    with timing_lock():
        for _ in range(3):
            t = time.perf_counter()
            res = detect_watermark_file(path, [key])
            runs.append(time.perf_counter() - t)
        load_after_detect = os.getloadavg()
    long_clip = long_clip_timing(real, work)
    return {"size": "1920x1080", "embed_frames_timed": len(frames), "embed_fps": embed_fps, "long_clip": long_clip,
            "embed_ms_median": 1000 * statistics.median(per_frame),
            "embed_fps_from_median": 1 / statistics.median(per_frame),
            "clip": {"seconds": seconds, "fps": fps, "frames": writer.frames_written, "bytes": path.stat().st_size,
                     "embed_and_encode_s": write_s, "codec": "libx264 crf 18 preset veryfast"},
            "detect_s_runs": runs, "detect_s_first": runs[0], "detect_s_median": statistics.median(runs),
            "detected": res.detected, "payload_ok": res.payload == payload, "p_value": res.p_value,
            "frames_used": res.frames_used, "load_before": load_before, "load_after_embed": load_after_embed,
            "load_after_detect": load_after_detect}


def long_clip_timing(real: dict, work: Path, seconds: float = 30.0, fps: float = 24.0) -> dict[str, object]:
    """An unmarked 30 s 1080p clip (the worst case: every look is read): detect vs decoding every frame."""
    import av

    key = WatermarkKey("wm-speed", bytes(range(1, 33)))
    path = work / "speed-1080p-30s-unmarked.mp4"
    base = hd_frames(real, 48)
    with VideoWriter(path, fps, crf=23, preset="ultrafast") as writer:
        for i in range(round(seconds * fps)):
            writer.write(base[i % len(base)])
    with timing_lock():
        load = os.getloadavg()
        t = time.perf_counter()
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            decoded = sum(1 for _ in container.decode(stream))
        decode_all_s = time.perf_counter() - t
        t = time.perf_counter()
        res = detect_watermark_file(path, [key])
        detect_s = time.perf_counter() - t
    return {"load": load, "seconds": seconds, "frames": decoded, "decode_all_s": decode_all_s, "detect_s": detect_s,
            "detected": res.detected, "p_value": res.p_value, "frames_used": res.frames_used,
            "codec": "libx264 crf 23 preset ultrafast (keyint 250)"}


# -- main --------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 windows, 400 trials, 6 wrong-key windows")
    parser.add_argument("--trials", type=int, help="random-key null trials, at least (default 10000; quick 400)")
    parser.add_argument("--windows", type=int, help="unmarked windows (default 1000; quick 20)")
    parser.add_argument("--wrong-key-windows", type=int, help="marked windows for the wrong-key test (default 20)")
    parser.add_argument("--no-speed", action="store_true", help="skip the 1080p speed part")
    parser.add_argument("--speed-only", action="store_true",
                        help="only the 1080p speed part (writes bench/results/watermark_speed.json)")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--out", type=Path, default=RESULTS / "watermark_null.json")
    args = parser.parse_args()
    trials = args.trials or (400 if args.quick else 10_000)
    n_windows = args.windows or (20 if args.quick else 1000)
    keys_per_window = max(1, math.ceil(trials / n_windows))
    n_wrong = args.wrong_key_windows or (6 if args.quick else 20)
    extra = 10 if args.quick else 50
    started = time.perf_counter()
    load_start = os.getloadavg()
    print(f"torch threads: process {torch.get_num_threads()}, watermark code 1 (one_thread); "
          f"cpus {os.cpu_count()}; load {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}", flush=True)

    t0 = time.perf_counter()
    real, proc = load_sources(args.quick, args.seed)
    if args.speed_only:
        with tempfile.TemporaryDirectory(prefix="wm-speed-") as tmp:
            speed_res = speed(real, 24 if args.quick else 96, Path(tmp))
        out = args.out if args.out != RESULTS / "watermark_null.json" else RESULTS / "watermark_speed.json"
        speed_res["env"] = {"cpus": os.cpu_count(), "load_start": load_start, "load_end": os.getloadavg()}
        print_speed(speed_res)
        out.write_text(json.dumps(speed_res, indent=2, default=float))
        print(f"wrote {out}")
        return
    print(f"sources: {len(real)} real clips, {len(proc)} procedural clips ({time.perf_counter() - t0:.1f} s)",
          flush=True)
    windows = make_windows(n_windows, real, proc, args.seed)
    print(f"null trials: {n_windows} windows × {keys_per_window} random keys (+ the real key, full detector)",
          flush=True)
    null = null_trials(windows, keys_per_window, verify=2 if args.quick else 8, seed=args.seed)
    print(f"wrong key: {n_wrong} marked windows, key B through detect_watermark + {extra} extra keys each",
          flush=True)
    wrong = wrong_key(n_wrong, extra, real, proc, args.seed)
    speed_res = None
    if not args.no_speed:
        print("speed: 1080p embed, 10 s 1080p MP4 detect", flush=True)
        with tempfile.TemporaryDirectory(prefix="wm-null-") as tmp:
            speed_res = speed(real, 24 if args.quick else 96, Path(tmp))

    results = {"null": null, "wrong_key": wrong, "speed": speed_res, "detection_p": DETECTION_P,
               "decision": "detected when p <= DETECTION_P (detect.py uses p < DETECTION_P; no p equals it)",
               "env": {"torch_threads_process": torch.get_num_threads(), "torch_threads_watermark": 1,
                       "cpus": os.cpu_count(), "load_start": load_start, "load_end": os.getloadavg(),
                       "wall_s": time.perf_counter() - started},
               "args": {"quick": args.quick, "trials": trials, "windows": n_windows, "seed": args.seed,
                        "wrong_key_windows": n_wrong, "extra_wrong_keys": extra}}
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=float))
    print(f"wrote {args.out}")


def print_speed(sp: dict) -> None:
    """The speed table (`speed`)."""
    print(f"\n== speed (1 torch thread in the watermark code, {os.cpu_count()} cpus) ==")
    print(f"embed 1920x1080: {sp['embed_fps']:.1f} frames/s over {sp['embed_frames_timed']} frames "
          f"(median {sp['embed_ms_median']:.1f} ms/frame = {sp['embed_fps_from_median']:.1f} fps)  target >= 60")
    print(f"detect 10 s 1080p 24 fps MP4: {sp['detect_s_median']:.2f} s median of "
          f"{', '.join(f'{x:.2f}' for x in sp['detect_s_runs'])} (detected {sp['detected']}, payload ok "
          f"{sp['payload_ok']}, {sp['frames_used']} frames used)  target <= 1")
    lc = sp["long_clip"]
    print(f"detect 30 s 1080p unmarked MP4 (every look read): {lc['detect_s']:.2f} s vs decoding all "
          f"{lc['frames']} frames {lc['decode_all_s']:.2f} s ({lc['frames_used']} frames used)")
    print(f"load average: before embed {fmt_load(sp['load_before'])}, "
          f"after embed {fmt_load(sp['load_after_embed'])}, after detect {fmt_load(sp['load_after_detect'])}")


def print_table(r: dict) -> None:
    null, wrong, sp = r["null"], r["wrong_key"], r["speed"]
    rk, fx, real = null["random_keys"], null["fixed_shift"], null["real_key"]
    t = null["timing_s"]
    print(f"\n== false positives at p <= {DETECTION_P:g} (unmarked 3 s windows) ==")
    print(f"{'trials':34s} {'windows':>7s} {'keys/w':>6s} {'trials':>7s} {'det':>4s} {'min p':>9s} {'max z':>6s}")
    print(f"{'random keys (key-free part reused)':34s} {null['windows']:7d} {null['keys_per_window']:6d} "
          f"{rk['n']:7d} {rk['detections']:4d} {rk['min_p']:9.3g} {rk['max_z']:6.2f}")
    print(f"{'real key (full _analyse)':34s} {null['windows']:7d} {1:6d} {real['n']:7d} {real['detections']:4d} "
          f"{real['min_p']:9.3g} {real['max_z']:6.2f}")
    for g, row in null["by_group"].items():
        print(f"{'  random keys, ' + g:34s} {row['windows']:7d} {'':6s} {row['trials']:7d} {row['detections']:4d} "
              f"{row['min_p']:9.3g} {row['max_z']:6.2f}")
    tp = null["tests_per_key"]
    print(f"union bound M per key {tp['min']}..{tp['max']}: detection needs z >= {tp['z_needed_min']:.2f}..."
          f"{tp['z_needed_max']:.2f}; shortcut vs full detector max |dz| {null['shortcut_max_abs_dz']:.1e}; "
          f"public detect_watermark agreed on {sum(c['agrees'] for c in null['public_api_checks'])}/"
          f"{len(null['public_api_checks'])} windows; flat windows {null['flat_windows']}")
    print(f"rule of three: 0 detections in {rk['n']} trials -> per-trial rate < {3 / max(1, rk['n']):.1e} (95%)"
          if rk["detections"] == 0 else f"{rk['detections']} detections!")
    print(f"time: full detection of a window {t['full_detection_mean']:.3f} s (accumulate {t['accumulate_mean']:.3f}"
          f" + analyse {t['analyse_real_key_mean']:.3f}), frame building {t['build_frames_mean']:.3f} s, "
          f"key-free part {t['key_free_mean']:.3f} s, per extra key {1000 * t['per_key_trial_mean']:.2f} ms; "
          f"{rk['n']} full detections would take ~{t['full_detections_for_trials_min']:.0f} min")
    print(f"\n== p-value uniformity ==\n{'':34s} {'n':>6s} {'<=.01':>7s} {'<=.05':>7s} {'<=.5':>7s} {'p=1':>6s} "
          f"{'KS D':>6s} {'KS D+':>6s}")
    for name, s in (("null, detector p (bound)", rk), ("wrong key B, public API", wrong["key_b"]),
                    ("wrong key, extra keys", wrong["extra"])):
        print(f"{name:34s} {s['n']:6d} {s['frac_le_0.01']:7.4f} {s['frac_le_0.05']:7.4f} {s['frac_le_0.5']:7.4f} "
              f"{s['frac_eq_1']:6.3f} {s['ks_two_sided']:6.3f} {s['ks_d_plus']:6.4f}")
    for name, s in (("null, fixed-shift Φ̄(z)", fx), ("wrong key, fixed-shift Φ̄(z)", wrong["extra_fixed_shift"])):
        print(f"{name:34s} {s['n']:6d} {s['frac_le_0.01']:7.4f} {s['frac_le_0.05']:7.4f} {s['frac_le_0.5']:7.4f} "
              f"{'':6s} {s['ks_two_sided']:6.3f} {'':6s}  (z mean {s['z_mean']:+.3f}, std {s['z_std']:.3f}, "
              f"KS p {s['ks_two_sided_p']:.2f})")
    print(f"\n== wrong key ==\nmarked with A, detected with B: {wrong['key_b']['detections']}/{wrong['windows']} "
          f"detections (min p {wrong['key_b']['min_p']:.3g}, max z {wrong['key_b']['max_z']:.2f}); extra wrong keys: "
          f"{wrong['extra']['detections']}/{wrong['extra']['n']} (min p {wrong['extra']['min_p']:.3g}); "
          f"positive control A: {wrong['key_a_detected']}/{wrong['windows']} detected, "
          f"{wrong['key_a_payload_exact']} exact payloads")
    if sp:
        print_speed(sp)
    print(f"load average start {fmt_load(r['env']['load_start'])}, end {fmt_load(r['env']['load_end'])}; "
          f"wall {r['env']['wall_s'] / 60:.1f} min")


def fmt_load(load: Sequence[float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


if __name__ == "__main__":
    main()
