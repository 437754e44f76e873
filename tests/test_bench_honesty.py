"""The benches measure what they say: held-out data that is held out, ledgers of the size claimed, seeds that hold.

* Moderation: our own examples are split by their *base* (the text before style suffixes,
  settings, temporal framing and spliced noise), so no variant of an eval prompt is trained on.
* Detector: the false-accusation figure is judged against a ledger of published clips; the
  synthetic part of it is real rows in the real tables, loaded by the real index.
* Watermark: the bench's random content, key and payloads depend on its seed only, not on the
  process (Python's `hash()` of a string changes with every process).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from moderation.training import examples as own
from moderation.training import examples as video

ROOT = Path(__file__).resolve().parents[1]


# -- moderation: the own-example split --------------------------------------------------------------------------
def _words(text: str) -> set[str]:
    return set(re.findall(r"[\w'-]+", text.lower()))


@pytest.mark.slow
def test_own_eval_split_shares_no_base_with_training() -> None:
    from moderation.training.train import own_rows

    examples = own.examples()
    for e in examples:
        # The base is what the text was made from: all its words are in the text.
        assert _words(e.base) <= _words(e.text), (e.base, e.text)
    eval_keys = {own.base_key(e.base) for e in examples if e.split == "eval"}
    train_keys = {own.base_key(e.base) for e in examples if e.split == "train"}
    assert eval_keys and train_keys and not eval_keys & train_keys
    # What training actually reads holds no eval base either.
    trained = {r.text for r in own_rows("train")}
    by_text = {e.text: e for e in examples}
    assert not {own.base_key(by_text[t].base) for t in trained} & eval_keys
    share = len([e for e in examples if e.split == "eval"]) / len(examples)
    assert 0.15 < share < 0.3


_DECORATIONS = sorted({s.lower() for s in own.STYLES + video.CAMERA if s}
                      | {p.lower() for p in own.PLACES + own.EVERYDAY_PLACES + video.SETTINGS}, key=len, reverse=True)
_WRAPPERS = [w.format(start.lower()) for start in video.BENIGN_STARTS
             for w in ("{}, then ", "{}; suddenly ", "it starts with {} and ends with ")]
_NOISE = {n.lower() for n in video.NOISE}


def _core(text: str) -> frozenset[str]:
    """The text with its decorations and variants undone, worked out from the text alone (not from `base`)."""
    t = text.lower().strip()
    for wrapper in _WRAPPERS:
        t = t.removeprefix(wrapper)
    words = [w for w in t.split() if w not in _NOISE and not re.fullmatch(r"[bcdfghjklmnpqrstvwxz]{3,8}", w)]
    if len(words) >= 3:  # spliced noise removed (pure keyboard mash stays as it is)
        t = " ".join(words)
    stripped = True
    while stripped:
        stripped = False
        for suffix in _DECORATIONS:
            if t.endswith(suffix) and len(t) > len(suffix):
                t, stripped = t[: -len(suffix)].rstrip(" ,"), True
    return frozenset(_words(t) - {"a", "an", "the"})


def test_no_variant_of_an_eval_prompt_is_trained_on() -> None:
    """Strip suffixes, settings, temporal framing and noise from every text: no core is on both sides.

    Splitting by the full text (the old split) fails this with hundreds of shared cores
    ("X" trained, "X, cinematic lighting" held out).
    """
    from moderation.training.train import own_rows

    train_cores = {_core(r.text) for r in own_rows("train")}
    shared = [e.text for e in own.examples() if e.split == "eval" and _core(e.text) in train_cores]
    assert not shared, shared[:5]


@pytest.mark.slow
def test_own_eval_prompts_are_not_public_training_rows() -> None:
    from moderation.normalize import normalize
    from moderation.training.train import DEFAULT_DATA, public_rows

    if not DEFAULT_DATA.is_dir():
        pytest.skip(f"{DEFAULT_DATA} absent (../shared/data is not in this checkout)")
    public = {normalize(r.text) for r in public_rows(DEFAULT_DATA, "train")}
    leaked = [e.text for e in own.examples() if e.split == "eval" and normalize(e.text) in public]
    assert not leaked, leaked[:5]


# -- detector: the ledger the negatives are judged against -----------------------------------------------------
def test_synthetic_ledger_rows_are_published_clips_the_detector_loads(runtime) -> None:
    from bench.synthetic_ledger import SYNTHETIC_MODEL, fill_ledger, hash_statistics, ledger_hashes, published_clips
    from detector.evidence import VerificationContext
    from provenance.index import FingerprintIndex
    from provenance.ledger.models import Generation

    ledger = runtime.ledger
    assert published_clips(ledger) == 0
    report = fill_ledger(ledger, 30, progress=False)
    assert report["added"] == 30 and published_clips(ledger) == 30
    assert fill_ledger(ledger, 30, progress=False)["added"] == 0  # already holds the target
    index = FingerprintIndex(ledger)
    assert index.refresh() == 30 and index.clips == 30
    with ledger.session() as s:
        generation_id = s.query(Generation.id).filter(Generation.model == SYNTHETIC_MODEL).first()[0]
    context = VerificationContext(ledger=ledger, trust_pem="", our_signers=frozenset())
    assert context.generation_status(generation_id) == "published"
    # Drawn like real pHashes, not uniform noise: the DC bit is nearly always set.
    stats = hash_statistics(ledger_hashes(ledger, synthetic=True))
    assert stats["hashes"] >= 30 * 2 * 6 * 0.9 and stats["bit_frequency_max"] > 0.95


def test_synthetic_fingerprints_are_deterministic() -> None:
    from bench.synthetic_ledger import synthetic_fingerprint

    a, b = synthetic_fingerprint(np.random.default_rng(3)), synthetic_fingerprint(np.random.default_rng(3))
    assert np.array_equal(a.phash, b.phash) and np.array_equal(a.dhash, b.dhash)
    assert not np.array_equal(a.phash[:1], synthetic_fingerprint(np.random.default_rng(4)).phash[:1])


# -- watermark: the seed decides everything ----------------------------------------------------------------------
def _digest(seed: int) -> str:
    """A digest of every random choice the watermark bench makes from `seed` (tiny sizes)."""
    import hashlib

    from bench.watermark import bench_key, bench_payload, build_attacks, procedural

    h = hashlib.sha256()
    for kind in ("low_texture", "fast_pan", "scene_cut"):
        for frame in procedural(kind, 0.25, width=48, height=32, seed=seed):
            h.update(frame.tobytes())
    h.update(bench_key(seed).secret)
    h.update(str(bench_payload(seed, "clip-a")).encode())
    frame = np.full((32, 48, 3), 128, np.uint8)
    for name in ("crop_0.71_random", "noise_5"):
        h.update(build_attacks(seed, "clip-a")[name][0]([frame])[0].tobytes())
    return h.hexdigest()


@pytest.mark.slow
def test_watermark_bench_random_choices_follow_the_seed_not_the_process() -> None:
    """Another process, with another string-hash seed, draws the same content, key, payload and attacks."""
    other_hash_seed = "1" if os.environ.get("PYTHONHASHSEED") == "0" else "0"
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); " \
           "from test_bench_honesty import _digest; print(_digest(5))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": other_hash_seed},
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == _digest(5) != _digest(6)


def test_x264_runs_without_its_avx512_code_only_where_the_cpu_has_it(tmp_path: Path) -> None:
    from bench.watermark import x264_asm

    cpu = tmp_path / "cpuinfo"
    cpu.write_text("processor\t: 0\nflags\t\t: fpu sse sse2 pni ssse3 sse4_1 sse4_2 avx avx2 fma bmi1 "
                   "avx512f avx512bw\n")
    assert x264_asm(cpu) == "MMX2,SSE,SSE2,SSE3,SSSE3,SSE4,SSE4.2,AVX,FMA3,BMI1,AVX2"  # no BMI2, LZCNT: not listed
    cpu.write_text("processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2\n")
    assert x264_asm(cpu) is None  # no AVX-512: x264 chooses for itself
    assert x264_asm(tmp_path / "absent") is None
