"""Channel code for the 64-bit payload: CRC-32, then a rate-1/3 convolutional code with soft Viterbi.

Why this code: the watermark channel hands the decoder *soft* bit estimates of very uneven
quality (one region is cropped away, another sits in a flat sky), and a convolutional code
decoded with soft-decision Viterbi uses that reliability directly, which hard-decision BCH or
Reed-Solomon cannot. The CRC is what lets the decoder refuse: Viterbi always returns *some*
word, and a wrong payload must never be reported, so a word is accepted only when its CRC-32
checks (a random word passes with probability 2^-32).

Layout: 64 payload bits + 32 CRC bits + 6 zero tail bits = 102 trellis steps → 306 channel bits.
The code is the LTE/3GPP K=7 rate-1/3 code (generators 133, 171, 165 octal).
"""

from __future__ import annotations

import zlib

import numpy as np

PAYLOAD_BITS = 64
CRC_BITS = 32
CONSTRAINT = 7
GENERATORS = (0o133, 0o171, 0o165)
INFO_BITS = PAYLOAD_BITS + CRC_BITS
STEPS = INFO_BITS + CONSTRAINT - 1
CHANNEL_BITS = STEPS * len(GENERATORS)

_STATES = 1 << (CONSTRAINT - 1)


def _parity(values: np.ndarray) -> np.ndarray:
    out = np.zeros_like(values)
    v = values.copy()
    while np.any(v):
        out ^= v & 1
        v >>= 1
    return out


def _trellis() -> tuple[np.ndarray, np.ndarray]:
    """For each (state, input bit): the next state and the 3 output bits (0/1)."""
    states = np.arange(_STATES)
    nxt = np.zeros((_STATES, 2), dtype=np.int64)
    out = np.zeros((_STATES, 2, len(GENERATORS)), dtype=np.int64)
    for bit in (0, 1):
        register = (bit << (CONSTRAINT - 1)) | states  # newest bit in the top position
        nxt[:, bit] = register >> 1
        for g, gen in enumerate(GENERATORS):
            out[:, bit, g] = _parity(register & gen)
    return nxt, out


_NEXT, _OUT = _trellis()
# Each next state has exactly two (state, bit) predecessors, as flat indices state * 2 + bit.
_PRED = np.argsort(_NEXT.reshape(-1), kind="stable").reshape(_STATES, 2)


def _int_to_bits(value: int, width: int) -> np.ndarray:
    return np.array([(value >> (width - 1 - i)) & 1 for i in range(width)], dtype=np.int64)


def _bits_to_int(bits: np.ndarray) -> int:
    value = 0
    for b in bits:
        value = (value << 1) | int(b)
    return value


def crc32(payload: int) -> int:
    """CRC-32 of the payload's 8 big-endian bytes."""
    return zlib.crc32(payload.to_bytes(8, "big")) & 0xFFFFFFFF


def encode(payload: int) -> np.ndarray:
    """Channel word (0/1, length CHANNEL_BITS) for a 64-bit unsigned payload."""
    if not 0 <= payload < (1 << PAYLOAD_BITS):
        raise ValueError(f"payload must be a 64-bit unsigned integer, got {payload!r}")
    info = np.concatenate([_int_to_bits(payload, PAYLOAD_BITS), _int_to_bits(crc32(payload), CRC_BITS),
                           np.zeros(CONSTRAINT - 1, dtype=np.int64)])
    state = 0
    out = np.empty((STEPS, len(GENERATORS)), dtype=np.int64)
    for i, bit in enumerate(info):
        out[i] = _OUT[state, bit]
        state = _NEXT[state, bit]
    return out.reshape(-1)


def viterbi(soft: np.ndarray) -> np.ndarray:
    """Most likely info bits (0/1, length INFO_BITS) for soft channel values (positive = bit 0)."""
    soft = np.asarray(soft, dtype=np.float64).reshape(STEPS, len(GENERATORS))
    signs = 1.0 - 2.0 * _OUT  # bit 0 -> +1, bit 1 -> -1; shape (states, 2, 3)
    metric = np.full(_STATES, -np.inf)
    metric[0] = 0.0
    prev_state = np.zeros((STEPS, _STATES), dtype=np.int64)
    prev_bit = np.zeros((STEPS, _STATES), dtype=np.int64)
    rows = np.arange(_STATES)
    for t in range(STEPS):
        branch = metric[:, None] + signs @ soft[t]  # (states, 2)
        if t >= INFO_BITS:  # tail: only zero inputs
            branch[:, 1] = -np.inf
        cand = branch.reshape(-1)[_PRED]  # (next states, 2 predecessors)
        pick = np.argmax(cand, axis=1)
        src = _PRED[rows, pick]
        metric = cand[rows, pick]
        prev_state[t] = src // 2
        prev_bit[t] = src % 2
    state = 0  # the tail returns the encoder to zero
    bits = np.zeros(STEPS, dtype=np.int64)
    for t in range(STEPS - 1, -1, -1):
        bits[t] = prev_bit[t, state]
        state = prev_state[t, state]
    return bits[:INFO_BITS]


def viterbi_list(soft: np.ndarray, size: int) -> np.ndarray:
    """The `size` most likely info words (rows, best first; fewer if fewer paths exist): list Viterbi.

    The parallel list Viterbi algorithm: every state keeps its `size` best survivors instead of one,
    so the paths that end in the zero state after the tail are the `size` globally best codewords.
    Row 0 is what `viterbi` returns.
    """
    soft = np.asarray(soft, dtype=np.float64).reshape(STEPS, len(GENERATORS))
    signs = 1.0 - 2.0 * _OUT  # (states, 2, 3)
    metric = np.full((_STATES, size), -np.inf)
    metric[0, 0] = 0.0
    back_state = np.zeros((STEPS, _STATES, size), dtype=np.int64)
    back_bit = np.zeros((STEPS, _STATES, size), dtype=np.int64)
    back_rank = np.zeros((STEPS, _STATES, size), dtype=np.int64)
    rows = np.arange(_STATES)[:, None]
    for t in range(STEPS):
        branch = metric[:, None, :] + (signs @ soft[t])[:, :, None]  # (states, 2, size)
        if t >= INFO_BITS:
            branch[:, 1, :] = -np.inf
        cand = branch.reshape(_STATES * 2, size)[_PRED].reshape(_STATES, 2 * size)  # (next, pred·rank)
        order = np.argsort(-cand, axis=1, kind="stable")[:, :size]
        metric = np.take_along_axis(cand, order, axis=1)
        src = _PRED[rows, order // size]  # flat state * 2 + bit
        back_state[t], back_bit[t], back_rank[t] = src // 2, src % 2, order % size
    ranks = np.flatnonzero(np.isfinite(metric[0]))
    state, rank = np.zeros(ranks.size, dtype=np.int64), ranks
    bits = np.zeros((ranks.size, STEPS), dtype=np.int64)
    for t in range(STEPS - 1, -1, -1):
        bits[:, t] = back_bit[t, state, rank]
        state, rank = back_state[t, state, rank], back_rank[t, state, rank]
    return bits[:, :INFO_BITS]


#: Candidates the decoder checks against the CRC, best first (CRC-aided list decoding). A wrong
#: word passes the CRC-32 with probability 2^-32, so checking 64 costs at most 64·2^-32 ≈ 1.5e-8 per
#: decode of a clip marked with our key, and a payload is only ever decoded after a detection.
LIST_SIZE = 64


def decode(soft: np.ndarray, list_size: int = LIST_SIZE) -> int | None:
    """The most likely payload whose CRC checks among the `list_size` best words, else None (never a guess)."""
    words = viterbi_list(soft, list_size) if list_size > 1 else viterbi(soft)[None]
    for bits in words:
        payload = _bits_to_int(bits[:PAYLOAD_BITS])
        if _bits_to_int(bits[PAYLOAD_BITS:]) == crc32(payload):
            return payload
    return None
