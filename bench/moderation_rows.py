"""Issue-23 rows of `python -m bench.moderation`: latency by prompt length, `moderate --file` throughput,
leave-one-language-out transfer, and per-source / per-language rates of the training rows.

Timings on a shared machine: each latency row reports wall time and the CPU time of the process
(one ONNX thread, so CPU time is what an idle core would take), with the load average.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from moderation import Moderator
from moderation.classifier import Embedder, Heads, features
from moderation.training.examples import SOURCES_FILE, examples
from moderation.training.train import CATEGORIES, Row, fit_heads, label_matrix

#: Language families held out together (a family's languages teach each other too much to hold one out alone).
FAMILIES = {"romance": ("es", "fr", "it", "pt"), "germanic": ("de", "nl"), "slavic": ("ru", "pl"),
            "cjk": ("zh", "ja", "ko"), "arabic": ("ar",), "indic": ("hi", "bn"), "turkic": ("tr",)}


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(values[int(q * (len(values) - 1))], 2)


def latency(moderator: Moderator, prompts: list[str], long_prompt: str, n_long: int = 5) -> dict:
    """Per-prompt `screen_prompt` time (wall and CPU) for prompts of <= 77 tokens, and for one long prompt
    (`n_long` timed runs after one untimed)."""
    tokenizer = Embedder.onnx(moderator.heads.encoder).tokenizer
    short = [p for p in prompts if len(tokenizer.content([moderator.prepare(p)])[0]) + 5 <= 77]
    for p in short[:10]:
        moderator.screen_prompt(p)  # warm-up
    wall, cpu = [], []
    for p in short:
        c0, t0 = time.process_time(), time.perf_counter()
        moderator.screen_prompt(p)
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    moderator.screen_prompt(long_prompt)  # warm-up: its first run allocates the larger batch's buffers
    lw, lc = [], []
    for _ in range(n_long):
        c0, t0 = time.process_time(), time.perf_counter()
        moderator.screen_prompt(long_prompt)
        lw.append((time.perf_counter() - t0) * 1000)
        lc.append((time.process_time() - c0) * 1000)
    return {"short_n": len(short), "short_wall_p50_ms": _pct(wall, 0.5), "short_wall_p95_ms": _pct(wall, 0.95),
            "short_cpu_p50_ms": _pct(cpu, 0.5), "short_cpu_p95_ms": _pct(cpu, 0.95),
            "long_chars": len(long_prompt), "long_wall_ms": round(statistics.median(lw), 1),
            "long_cpu_ms": round(statistics.median(lc), 1), "long_cpu_p95_ms": _pct(lc, 0.95), "long_n": n_long,
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def throughput(prompts: list[str], workers: int = 2) -> dict:
    """`credence moderate --file` on `prompts` (one process per worker, the file split between them),
    prompts per second of wall time, the model load excluded (a warm-up file of one prompt is timed apart)."""
    exe = Path(sys.executable).with_name("credence")
    with tempfile.TemporaryDirectory() as tmp:
        env = os.environ | {"CREDENCE_HOME": tmp}
        files = []
        for w in range(workers):
            f = Path(tmp) / f"p{w}.txt"
            f.write_text("\n".join(prompts[w::workers]) + "\n", encoding="utf-8")
            files.append(f)
        one = Path(tmp) / "one.txt"
        one.write_text("a cat\n", encoding="utf-8")
        t0 = time.perf_counter()
        subprocess.run([str(exe), "moderate", "--file", str(one), "--json"], env=env, capture_output=True, timeout=600)
        startup = time.perf_counter() - t0
        t0 = time.perf_counter()
        procs = [subprocess.Popen([str(exe), "moderate", "--file", str(f), "--json"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for f in files]
        lines = sum(len(p.communicate(timeout=1800)[0].splitlines()) for p in procs)
        wall = time.perf_counter() - t0
    return {"prompts": len(prompts), "answers": lines, "workers": workers, "wall_s": round(wall, 1),
            "startup_s": round(startup, 1), "prompts_per_s": round(len(prompts) / max(wall - startup, 1e-3), 1),
            "prompts_per_s_incl_startup": round(len(prompts) / wall, 1),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def own_languages() -> dict[str, str]:
    """Language of each of our multilingual examples (by the scene it was written from)."""
    sources = json.loads(SOURCES_FILE.read_text(encoding="utf-8"))
    scene_lang: dict[str, str] = {}
    for key in ("UNSAFE", "UNSAFE_MORE"):
        for lang, rows in sources[key].items():
            for _, text in rows:
                scene_lang[text] = lang
    for key in ("BENIGN", "BENIGN_MORE"):
        for lang, rows in sources[key].items():
            for text in rows:
                scene_lang[text] = lang
    return {e.text: scene_lang[e.base] for e in examples() if e.base in scene_lang}


def row_language(row: Row, own: dict[str, str]) -> str:
    """A training row's language: its source's field, our examples' scene, else English."""
    return own.get(row.text, row.lang)


def leave_one_language_out(policy, rows: list[Row], x: np.ndarray, ml_eval: list[dict],  # type: ignore[no-untyped-def]
                           negatives: int = 6000, iterations: int = 80, encoder: str = "e5-small-int8") -> dict:
    """Per language family: heads fitted without any training row of its languages (nor mixed-language
    variants), then the multilingual evaluation set's prompts in those languages scored with them.

    To fit seven times on this machine, each fit keeps every positive and `negatives` benign rows
    (a fixed sample) and runs `iterations` L-BFGS steps.
    """
    own = own_languages()
    langs = np.array([row_language(r, own) for r in rows])
    mixed = np.array([r.source == "augment:mixed_language" for r in rows])
    y = label_matrix(rows)
    weights = np.array([r.weight for r in rows])
    rng = np.random.default_rng(0)
    benign = np.flatnonzero(y.sum(1) == 0)
    keep_benign = set(rng.permutation(benign)[:negatives].tolist())
    base = np.array([(y[i].sum() > 0) or (i in keep_benign) for i in range(len(rows))])
    out: dict[str, dict] = {}
    for family, members in FAMILIES.items():
        held = [r for r in ml_eval if r["lang"] in members]
        if not held:
            continue
        idx = np.flatnonzero(base & ~np.isin(langs, members) & ~mixed)
        w, b = fit_heads(x[idx], y[idx], iterations=iterations, row_weight=weights[idx])
        heads = Heads(CATEGORIES, w, b, np.zeros((1, 384), np.float32), ["-"], np.zeros(1, np.int16),
                      {"encoder": encoder})
        moderator = Moderator(policy, heads)
        decisions = moderator.decide([moderator.prepare(r["text"], check=False) for r in held])
        unsafe = [d for r, d in zip(held, decisions, strict=True) if r["label"] == "unsafe"]
        safe = [d for r, d in zip(held, decisions, strict=True) if r["label"] == "safe"]
        out[family] = {"languages": [m for m in members if any(r["lang"] == m for r in held)],
                       "training_rows_removed": int((base & np.isin(langs, members)).sum() + (base & mixed).sum()),
                       "unsafe_n": len(unsafe),
                       "unsafe_flagged": sum(d.action != "allow" for d in unsafe) / max(1, len(unsafe)),
                       "benign_n": len(safe),
                       "benign_flagged": sum(d.action != "allow" for d in safe) / max(1, len(safe))}
        print(f"  {family}: unsafe flagged {out[family]['unsafe_flagged']:.2f} of {len(unsafe)}", flush=True)
    out["mean_unsafe_flagged"] = float(np.mean([v["unsafe_flagged"] for v in out.values()]))
    return out


def by_source_and_language(decisions: dict[str, list]) -> dict[str, dict]:
    """Flag rates of cross-validated training rows per source and per language (unsafe / benign kept apart)."""
    table: dict[str, dict] = defaultdict(dict)
    for key, ds in sorted(decisions.items()):
        table[key] = {"n": len(ds), "flagged": sum(d.action != "allow" for d in ds) / max(1, len(ds)),
                      "blocked": sum(d.action == "block" for d in ds) / max(1, len(ds))}
    return dict(table)


def cross_validated_rows(policy, rows: list[Row], emb: np.ndarray, texts: list[str], folds: int,  # type: ignore[no-untyped-def]
                         fold_of, iterations: int = 120, encoder: str = "e5-small-int8",
                         ) -> tuple[dict[str, list], dict[str, list]]:
    """Every public training row decided by heads fitted without its fold, on its cached whole-prompt
    embedding; grouped by source (unsafe/benign apart) and by language."""
    x = features(texts, emb)
    y = label_matrix(rows)
    weights = np.array([r.weight for r in rows])
    public = np.array([not r.source.startswith(("own:", "augment:")) for r in rows])
    fold = np.array([fold_of(t, folds) for t in texts])
    own = own_languages()
    by_source: dict[str, list] = defaultdict(list)
    by_lang: dict[str, list] = defaultdict(list)
    for k in range(folds):
        train_idx = np.flatnonzero(~(public & (fold == k)))
        test_idx = np.flatnonzero(public & (fold == k))
        w, b = fit_heads(x[train_idx], y[train_idx], iterations=iterations, row_weight=weights[train_idx])
        heads = Heads(CATEGORIES, w, b, emb[train_idx[:1]], [rows[train_idx[0]].text], np.zeros(1, np.int16),
                      {"encoder": encoder})
        decisions = Moderator(policy, heads).decide_embedded([texts[i] for i in test_idx], emb[test_idx])
        for i, d in zip(test_idx, decisions, strict=True):
            side = "unsafe" if y[i].sum() > 0 else "benign"
            by_source[f"{rows[i].source} {side} (cv)"].append(d)
            by_lang[f"{row_language(rows[i], own)} {side} (cv)"].append(d)
        print(f"  fold {k + 1}/{folds}: {len(test_idx)} held-out rows", flush=True)
    return by_source, by_lang
