"""The "several published clips match" rule (issue 24): generic content is weak, near duplicates a review."""

from __future__ import annotations

import numpy as np

import detector
from detector import FingerprintSource, VerificationContext
from detector.fingerprint_source import NEAR_DUPLICATE_DISTANCE
from provenance.fingerprint import QueryFingerprint
from provenance.index import FingerprintMatch


class Listed:
    """An index that answers with fixed matches: the rule under test is the source's, not the index's."""

    def __init__(self, matches: list[FingerprintMatch]) -> None:
        self.matches = matches

    def search(self, query: QueryFingerprint, *, limit: int = 5) -> list[FingerprintMatch]:
        return self.matches[:limit]


def query() -> QueryFingerprint:
    n = 12
    return QueryFingerprint(np.arange(n) / 4.0, np.zeros((n, 16), np.uint64), np.zeros((n, 16), np.uint64),
                            np.ones(n, dtype=bool))


def match(generation: str, distance: float) -> FingerprintMatch:
    return FingerprintMatch(1, generation, 3, 3, 1.0, distance, 0, 0, 0.0, query_start_s=0.0, query_end_s=3.0,
                            clip_start_s=0.0, clip_end_s=3.0)


CONTEXT = VerificationContext(ledger=None, trust_pem="", our_signers=frozenset())


def test_loose_matches_of_several_clips_are_generic_not_a_review() -> None:
    loose = NEAR_DUPLICATE_DISTANCE + 4
    evidence = FingerprintSource(index=Listed([match("g1", loose), match("g2", loose + 1)])).judge(query(), CONTEXT)
    assert evidence.finding == "weak" and evidence.generation_id is None
    assert "generic content" in evidence.details["reason"] and evidence.details["ambiguous_with"] == ["g2"]
    verdict = detector.combine([evidence])
    assert verdict.verdict == "not_generated", verdict.to_dict()


def test_near_duplicates_still_ask_a_person_with_a_reason_to_act_on() -> None:
    close = NEAR_DUPLICATE_DISTANCE - 4
    evidence = FingerprintSource(index=Listed([match("g1", close), match("g2", close)])).judge(query(), CONTEXT)
    assert evidence.finding == "ambiguous"
    verdict = detector.combine([evidence])
    assert verdict.verdict == "review"
    assert "g1" in verdict.reason and "g2" in verdict.reason and "compare the upload with each clip" in verdict.reason
