"""Perceptual fingerprints of published clips: per-second hashes that survive crops, bars and flips.

Plain per-frame hashes (PDQ, vPDQ, one pHash per frame) match re-encodes and resizes but lose
every crop, letterbox and flip (the research notes measured 0% on 80-90% centre crops). Here
each second of video is the mean of its middle half second (robust to where a query's samples
fall), and stores the 64-bit imagehash pHash and dHash of six *regions* of it, taken after
removing uniform bars:

* the whole content, and its centred 68% (centre crops of 68-100% are then found by the query
  trying its own centred sub-crops at 6 scales: one of them lands on the stored 68% region);
* the largest centred 9:16 (16:9 for portrait) region, whole, and the centred 85% of the
  largest 4:5 one, for clips reframed to a phone's or a feed's aspect ratio (issue 24; before,
  the 1:1 and 9:16 regions at 68%: a 9:16 reframe matched 5 of 10 real clips, now 8);
* the top and the bottom half, one of which survives a sticker or a caption.

The published side stays small (6 hashes of 16 bytes a second); the query side does the
searching: it hashes every half-second window (every quarter second), bars removed, at 6
centred sub-crops and both halves, mirrored and not (16 variants). Flat and dark samples carry
no usable hash and are marked uninformative on both sides, so a black or single-colour clip can
never match anything.

The package: `hashing` (regions, pHash and dHash, half-second windows: what both sides share),
`record` (the published side, `FingerprintRecorder` / `ClipFingerprint`) and `query` (the
sampled decode of an upload, `query_fingerprint` / `QueryFingerprint`). The index that matches
one against the other is `provenance.index`.
"""

from .hashing import (
    ALGORITHM,
    QUERY_RATE,
    QUERY_SCALES,
    QUERY_VARIANTS,
    STORED_REGIONS,
    WINDOW_BINS_PER_SECOND,
    WORK_SIDE,
    WindowAverager,
    content_box,
    hamming,
    hash_regions,
    informative,
    query_hashes,
    region,
    stored_hashes,
    to_work_grey,
)
from .query import QueryFingerprint, query_fingerprint
from .record import ClipFingerprint, FingerprintRecorder, fingerprint_frames, fingerprint_recorder

__all__ = [
    "ALGORITHM",
    "QUERY_RATE",
    "QUERY_SCALES",
    "QUERY_VARIANTS",
    "STORED_REGIONS",
    "WINDOW_BINS_PER_SECOND",
    "WORK_SIDE",
    "ClipFingerprint",
    "FingerprintRecorder",
    "QueryFingerprint",
    "WindowAverager",
    "content_box",
    "fingerprint_frames",
    "fingerprint_recorder",
    "hamming",
    "hash_regions",
    "informative",
    "query_fingerprint",
    "query_hashes",
    "region",
    "stored_hashes",
    "to_work_grey",
]
