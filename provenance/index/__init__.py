"""The fingerprint index: FAISS finds candidate clips, exact scoring names the match.

The ledger's fingerprint rows are the one truth; this index is derived data any process can throw
away and rebuild (`credence index rebuild`). Its parts:

* `fingerprint_index`: `FingerprintIndex`, the index a process searches (snapshot + ledger tail,
  the FAISS candidate stage), `build_snapshot` and the process-wide `index_for`;
* `scoring`: stage 2, the exact score of one candidate clip (`score_clip`, `FingerprintMatch`);
* `store`: the clip store and its memory-mapped snapshots on disk;
* `shards`: the index spread over processes, queried scatter-gather (`ShardedIndex`).
"""

from .fingerprint_index import FingerprintIndex, build_snapshot, default_snapshot_dir, index_for, shard_of
from .scoring import FingerprintMatch, score_clip

__all__ = [
    "FingerprintIndex",
    "FingerprintMatch",
    "build_snapshot",
    "default_snapshot_dir",
    "index_for",
    "score_clip",
    "shard_of",
]
