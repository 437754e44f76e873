"""Embeddings of training and benchmark texts, cached on disk and computed by worker processes.

Embedding is most of the cost of fitting heads (tens of thousands of rows on a shared 2-core
machine), so vectors are kept by text in an `.npz` (under `bench/results/`, not in git) and only
new texts are embedded; the cache is saved every few thousand rows, so an interrupted run resumes.
Workers are processes with one ONNX thread each (the encoder is not re-entrant per thread budget).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

SAVE_EVERY = 2048


def _worker(job: tuple[str, list[str]]) -> np.ndarray:
    from ..classifier import Embedder

    encoder, texts = job
    return Embedder.onnx(encoder).embed_many(texts)


def load(path: Path) -> dict[str, np.ndarray]:
    """The cached vectors by text (empty when there is no cache yet)."""
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as z:
        return dict(zip((str(t) for t in z["texts"]), z["vectors"], strict=True))


def save(path: Path, vectors: dict[str, np.ndarray]) -> None:
    """Write the cache atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    texts = list(vectors)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, texts=np.array(texts), vectors=np.stack([vectors[t] for t in texts]).astype(np.float32))
    tmp.replace(path)


def embed(texts: list[str], path: Path, workers: int = 2, log: bool = True,
          encoder: str = "e5-small-int8") -> np.ndarray:
    """Unit vectors of `texts` (an int8 ONNX encoder), embedding only those the cache at `path` lacks."""
    vectors = load(path)
    missing = sorted({t for t in texts if t not in vectors}, key=len)
    t0 = time.perf_counter()
    if missing:
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers) as pool:
            for at in range(0, len(missing), SAVE_EVERY):
                chunk = missing[at:at + SAVE_EVERY]
                parts = [chunk[i::workers] for i in range(workers)]
                for part, vecs in zip(parts, pool.map(_worker, [(encoder, p) for p in parts]), strict=True):
                    vectors.update(zip(part, vecs, strict=True))
                save(path, vectors)
                if log:
                    print(f"  embedded {min(at + SAVE_EVERY, len(missing))}/{len(missing)} "
                          f"in {time.perf_counter() - t0:.0f} s", flush=True)
    return np.stack([vectors[t] for t in texts]).astype(np.float32) if texts else np.zeros((0, 384), np.float32)
