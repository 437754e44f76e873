"""Fingerprint evidence: the published clips whose per-second perceptual hashes the upload matches.

A fingerprint is a near match, not a proof (two shots of the same chair look alike), so it is
conservative: it claims a generation only when several seconds match under one consistent edit
with small distances; a partial match is reported as `weak`, which can support another source
but never accuses on its own. Flat and dark clips carry no informative samples and never match.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from provenance.fingerprint import ALGORITHM, QueryFingerprint, query_fingerprint
from provenance.index import FingerprintMatch, index_for

from .evidence import LEDGER_ERRORS, RELEASED, Evidence, VerificationContext, claim, unchecked

if TYPE_CHECKING:
    from .shared_decode import SharedRead

#: A strong match: at least this share of the stored seconds the upload spans ...
MIN_SIMILARITY = 0.6
#: ... at least this many of them (or all, for a clip shorter than that) ...
MIN_SECONDS = 2
#: ... with this mean combined (pHash + dHash, of 128 bits) distance.
MAX_MEAN_DISTANCE = 18.0
#: A one-second clip has one stored sample: it must match nearly exactly. At 8 bits, 16 of 67
#: never-published moving-gradient clips were `generated` against 10M clips (one second each, at
#: 5-7 bits: smooth gradients of one direction share their low-frequency pHash); every true
#: identification of the attack suite matched two seconds or more.
MAX_SINGLE_DISTANCE = 3.0
#: Two matched seconds are the least a fingerprint-alone claim rests on, and chance reaches them at
#: scale: against 10M clips (2026-12-07, `bench.detector --negatives 1000 --index-snapshot`), 3
#: of 1,000 never-published procedural clips (two textures, one gradient) matched a published
#: clip over 2 s at 18.0, 17.5 and 9.5 bits and were `generated`. A two-second claim must be close
#: to exact (a re-encode or rescale of a short clip reads at 0-5 bits); crops and reframes of a
#: clip that short are left to the watermark.
MAX_TWO_SECOND_DISTANCE = 8.0


def is_strong(match: FingerprintMatch) -> bool:
    """Whether a match is strong enough to name a generation on its own."""
    if match.similarity < MIN_SIMILARITY or match.mean_distance > MAX_MEAN_DISTANCE:
        return False
    # Seconds the upload can hold: a hypothesis that "matches" more stored seconds than the upload
    # spans under its own offset has gathered chance hits from neighbouring offsets. Issue 24: two
    # never-published 1 s gradient clips went to `review` on "2 of 1 s" matches to two bulk clips.
    seconds = min(match.matched_seconds, match.expected_seconds)
    if seconds == 2:
        return match.mean_distance <= MAX_TWO_SECOND_DISTANCE
    if seconds >= MIN_SECONDS:
        return True
    return match.expected_seconds == 1 and seconds == 1 and match.mean_distance <= MAX_SINGLE_DISTANCE


#: Published clips a look-up returns: enough for the spans of a compilation of several of ours.
SEARCH_LIMIT = 8

#: Two strong matches of different generations compete for the same seconds of the upload when
#: their spans overlap by more than this share of the shorter one; less, and the upload is a
#: montage of both (each span its own segment), not an ambiguity.
MAX_MONTAGE_OVERLAP = 0.5


def overlap_share(a: FingerprintMatch, b: FingerprintMatch) -> float:
    """The share of the shorter of two matches' upload spans that the other covers."""
    inter = min(a.query_end_s, b.query_end_s) - max(a.query_start_s, b.query_start_s)
    shorter = min(a.query_end_s - a.query_start_s, b.query_end_s - b.query_start_s)
    return max(0.0, inter) / shorter if shorter > 0 else 0.0


def span_of(match: FingerprintMatch) -> dict[str, Any]:
    """A match as a timeline span: the upload's seconds and the published clip's seconds."""
    return {"start_s": match.query_start_s, "end_s": match.query_end_s, "generation_id": match.generation_id,
            "clip_start_s": match.clip_start_s, "clip_end_s": match.clip_end_s, "speed": match.speed,
            "matched_seconds": match.matched_seconds}


def _ambiguity(best: FingerprintMatch, rivals: list[FingerprintMatch]) -> str:
    """The reason of an ambiguous match, written for the person who reviews it: who, where, how well."""
    def one(m: FingerprintMatch) -> str:
        return (f"{m.generation_id or 'an unnamed clip'} ({m.matched_seconds} of {m.expected_seconds} s, "
                f"mean distance {m.mean_distance:.1f} of 128 bits)")

    return (f"several published clips match the same seconds of the upload ({best.query_start_s:.1f}-"
            f"{best.query_end_s:.1f} s): {one(best)} and " + ", ".join(one(m) for m in rivals)
            + "; compare the upload with each clip (open them from the generation pages) to say which it is")


#: Two published clips are near duplicates of the upload's seconds (a person must choose) only
#: when each matches this closely (mean combined distance, of 128 bits): re-encodes of one of our
#: clips sit at 2-10 bits, and two of our clips that close are re-publications of one picture.
#: Looser multiple matches are generic content (`_generic`): weak, not `review`.
NEAR_DUPLICATE_DISTANCE = 10.0


def near_duplicate(match: FingerprintMatch) -> bool:
    """Whether a match is close enough that a rival to it is a real ambiguity, not generic content."""
    return match.mean_distance <= NEAR_DUPLICATE_DISTANCE


def _generic(best: FingerprintMatch, rivals: list[FingerprintMatch]) -> str:
    """Why several loose matches over the same seconds are not evidence: the clip looks generic."""
    return (f"{len(rivals) + 1} unrelated published clips match the same seconds of the upload "
            f"({best.query_start_s:.1f}-{best.query_end_s:.1f} s) loosely (mean distance "
            f"{best.mean_distance:.1f} and more, of 128 bits): generic content, so the fingerprint names no "
            "generation; the watermark and the manifest decide")


class MatchIndex(Protocol):
    """What the source searches: this process's `FingerprintIndex`, or a `ShardedIndex` of servers."""

    def search(self, query: QueryFingerprint, *, limit: int = 5) -> list[FingerprintMatch]: ...


class FingerprintSource:
    """Looks the upload up in the fingerprint index built from the ledger.

    `index` is the index to search; by default the process-wide one over the context's ledger
    (`index_for`: its snapshot, then the ledger's tail). A deployment past one box passes a
    `provenance.index.shards.ShardedIndex`.
    """

    name = "fingerprint"

    def __init__(self, max_seconds: float | None = None, index: MatchIndex | None = None) -> None:
        self.max_seconds = max_seconds
        self.index = index

    @staticmethod
    def _spans(strong: list[FingerprintMatch], context: VerificationContext) -> list[dict[str, Any]]:
        """The timeline spans of the strong matches: released generations, each over its own seconds.

        A weaker match over seconds a stronger one already holds is left out (it is the same
        seconds, by a lesser hypothesis). Only `published` generations place a span: a held or
        failed generation's clip never left us, so it cannot be part of an upload.
        """
        spans: list[dict[str, Any]] = []
        kept: list[FingerprintMatch] = []
        for m in strong:
            if m.generation_id is None or any(overlap_share(m, o) > MAX_MONTAGE_OVERLAP for o in kept):
                continue
            if context.generation_status(m.generation_id) != RELEASED:
                continue
            kept.append(m)
            spans.append(span_of(m))
        return spans

    def inspect(self, path: Path, context: VerificationContext) -> Evidence:
        """Evidence from the nearest published clips (survives crops, bars, flips, re-encodes)."""
        details: dict[str, Any] = {"available": context.ledger is not None, "algorithm": ALGORITHM,
                                   "matched": False, "generation_id": None, "similarity": 0.0,
                                   "matched_seconds": 0}
        if context.ledger is None:
            if context.ledger_state == "unavailable":
                # Without the ledger the index may miss any clip published since it was loaded.
                return unchecked(self.name, details)
            details["reason"] = "no ledger is initialised: nothing was published to match"
            return Evidence(self.name, None, "absent", 0.0, details)
        return self.judge(query_fingerprint(path, max_seconds=self.max_seconds), context)

    def inspect_read(self, path: Path, context: VerificationContext, read: SharedRead) -> Evidence:
        """Evidence from the query fingerprint of the verification's shared decode (`detector.verify`)."""
        if context.ledger is None or read.fingerprint is None:
            return self.inspect(path, context)
        return self.judge(read.fingerprint, context)

    def judge(self, query: QueryFingerprint, context: VerificationContext) -> Evidence:
        """Evidence from an upload's query fingerprint: look it up, say how well it matches."""
        details: dict[str, Any] = {"available": True, "algorithm": ALGORITHM, "matched": False,
                                   "generation_id": None, "similarity": 0.0, "matched_seconds": 0}
        details["informative_samples"] = int(query.informative.sum())
        if not query.informative.any():
            details["reason"] = "the clip is too flat or dark to fingerprint"
            return Evidence(self.name, None, "absent", 0.0, details)
        details["samples"] = int(query.times.size)
        try:
            index = self.index if self.index is not None else index_for(context.ledger)
            matches = index.search(query, limit=SEARCH_LIMIT)
        except LEDGER_ERRORS:
            return unchecked(self.name, details)
        if not matches:
            return Evidence(self.name, None, "absent", 0.0, details)
        best = matches[0]
        details.update(best.to_dict())
        details["strong"] = is_strong(best)
        details["candidates"] = [m.to_dict() for m in matches[1:3]]
        strong = [m for m in matches if is_strong(m)]
        anchor = strong[0] if strong else best
        # Strong matches of other generations over the same seconds: the fingerprint cannot say
        # which. Over other seconds they are the other parts of a compilation (the timeline's spans).
        rivals = [m for m in strong if m.generation_id != anchor.generation_id
                  and overlap_share(m, anchor) > MAX_MONTAGE_OVERLAP]
        if rivals and not all(near_duplicate(m) for m in [anchor, *rivals]):
            # Several unrelated published clips matching the same seconds loosely is what generic
            # content does (smooth gradients, plain textures): it undermines each match instead of
            # asking a person to choose. A partial match, supporting another source at most.
            details["reason"] = _generic(anchor, rivals)
            details["ambiguous_with"] = [m.generation_id for m in rivals]
            return Evidence(self.name, None, "weak", 0.3 * anchor.similarity, details)
        if rivals:
            details["reason"] = _ambiguity(anchor, rivals)
            details["ambiguous_with"] = [m.generation_id for m in rivals]
            return Evidence(self.name, None, "ambiguous", 0.5, details)
        try:
            details["spans"] = self._spans(strong, context)
        except LEDGER_ERRORS:
            return unchecked(self.name, details)
        if is_strong(best) and best.generation_id is not None:
            details["matched"] = True
            strength = min(0.99, 0.9 + 0.09 * best.similarity)
            return claim(self.name, best.generation_id, strength, details, context)
        return Evidence(self.name, best.generation_id, "weak", 0.3 * best.similarity, details)
