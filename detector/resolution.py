"""The C2PA soft-binding resolution API, as functions: find a manifest from a binding or content.

C2PA 2.x "Decoupled manifests" defines four calls any C2PA-aware client can make to recover the
manifest of a clip whose embedded manifest was stripped: by soft-binding value (our watermark's
64-bit mark id), by content (the clip itself: watermark, then fingerprint), the manifest store
by id, and the list of algorithms served. The HTTP routes in `credence.routes.c2pa_resolution`
are thin wrappers of these.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from provenance.errors import ProvenanceError
from provenance.fingerprint import ALGORITHM as FINGERPRINT_ALG
from provenance.ledger import Generation, Ledger, PublishedFile

from .evidence import LEDGER_ERRORS, RELEASED, LedgerUnavailable, VerificationContext
from .fingerprint_source import FingerprintSource, is_strong
from .watermark_source import WatermarkSource


class ResolutionError(ProvenanceError):
    """A malformed soft-binding query (unknown algorithm, bad value): the client's 400."""


@dataclass(frozen=True)
class ManifestMatch:
    """One manifest the query resolves to, with the spec's 0-100 similarity score."""

    manifest_id: str
    similarity_score: int
    generation_id: str
    alg: str

    def to_dict(self, endpoint: str | None = None) -> dict[str, Any]:
        """The spec's match object."""
        out: dict[str, Any] = {"manifestId": self.manifest_id, "similarityScore": self.similarity_score}
        if endpoint:
            out["endpoint"] = endpoint
        return out


def watermark_algorithm() -> str:
    """The watermark's soft-binding algorithm name (the watermark always ships)."""
    from provenance.watermark import ALGORITHM

    return str(ALGORITHM)


def supported_algorithms() -> dict[str, list[dict[str, str]]]:
    """`GET /services/supportedAlgorithms`."""
    return {"watermarks": [{"alg": watermark_algorithm()}], "fingerprints": [{"alg": FINGERPRINT_ALG}]}


def _manifests_of(ledger: Ledger, generation_id: str) -> list[str]:
    """The manifest labels of `generation_id`'s files, only if the ledger released it.

    A generation that is not `published` (a publish killed halfway, a held or failed one) may
    have file rows, but its manifests were never given out: resolving them would vouch for it.
    """
    with ledger.session() as s:
        labels = s.scalars(select(PublishedFile.manifest_label).join(
            Generation, Generation.id == PublishedFile.generation_id).where(
            PublishedFile.generation_id == generation_id, PublishedFile.manifest_label.is_not(None),
            Generation.status == RELEASED).order_by(PublishedFile.id)).all()
    return [label for label in labels if label]


def matches_by_binding(ledger: Ledger, alg: str, value: str, max_results: int = 10) -> list[ManifestMatch]:
    """`/matches/byBinding`: the manifests whose soft binding (our mark id) equals `value` (base64)."""
    wm = watermark_algorithm()
    if alg == FINGERPRINT_ALG:
        raise ResolutionError(f"alg {alg!r} is a fingerprint: look it up with POST /matches/byContent")
    if alg != wm:
        raise ResolutionError(f"unsupported alg {alg!r}; see /services/supportedAlgorithms")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ResolutionError(f"value {value[:40]!r} is not base64") from None
    if len(raw) != 8:
        raise ResolutionError(f"value decodes to {len(raw)} bytes; the {alg} binding is 8 (a 64-bit mark id)")
    try:
        generation = ledger.find_by_mark(int.from_bytes(raw, "big"))
        if generation is None:
            return []
        labels = _manifests_of(ledger, generation.id)
    except LEDGER_ERRORS:
        raise LedgerUnavailable() from None  # never "no match" when the ledger could not be asked
    return [ManifestMatch(label, 100, generation.id, alg) for label in labels][:max_results]


def matches_by_content(path: Path, context: VerificationContext, max_results: int = 10) -> list[ManifestMatch]:
    """`/matches/byContent`: decode our watermark, else look the fingerprint up; best first.

    An empty list means "no manifest of ours matches", so it is given only when the ledger
    answered (or none was ever initialised); an outage raises `LedgerUnavailable` (503) instead.
    """
    if context.ledger is None:
        if context.ledger_state == "unavailable":
            raise LedgerUnavailable()
        return []
    try:
        return _matches_by_content(path, context, context.ledger, max_results)
    except LEDGER_ERRORS as exc:
        if isinstance(exc, LedgerUnavailable):
            raise
        raise LedgerUnavailable() from None


def _matches_by_content(path: Path, context: VerificationContext, ledger: Ledger,
                        max_results: int) -> list[ManifestMatch]:
    found: dict[str, ManifestMatch] = {}
    wm = WatermarkSource().inspect(path, context)
    if wm.finding == "unchecked":
        raise LedgerUnavailable()
    if wm.finding == "generated" and wm.generation_id:
        for label in _manifests_of(ledger, wm.generation_id):
            found[label] = ManifestMatch(label, 100, wm.generation_id, watermark_algorithm())
    from provenance.fingerprint import query_fingerprint
    from provenance.index import index_for

    query = query_fingerprint(path, max_seconds=FingerprintSource().max_seconds)
    if query.informative.any():
        for match in index_for(ledger).search(query, limit=max_results):
            # Near matches only: the DCC guidance presents fingerprint results for review, so
            # a weak look-alike is left out rather than offered with a low score.
            if match.generation_id is None or not is_strong(match):
                continue
            score = round(100 * match.similarity * max(0.0, 1 - match.mean_distance / 64))
            for label in _manifests_of(ledger, match.generation_id):
                if label not in found:
                    found[label] = ManifestMatch(label, max(1, min(99, score)), match.generation_id, FINGERPRINT_ALG)
    return sorted(found.values(), key=lambda m: -m.similarity_score)[:max_results]


def manifest_bytes(ledger: Ledger, manifest_id: str) -> bytes | None:
    """`/manifests/{id}`: the exact manifest store signed into the published file, or None.

    Only a released generation's manifest is served (see `_manifests_of`).
    """
    try:
        with ledger.session() as s:
            return s.scalars(select(PublishedFile.manifest).join(
                Generation, Generation.id == PublishedFile.generation_id).where(
                PublishedFile.manifest_label == manifest_id, Generation.status == RELEASED)).first()
    except LEDGER_ERRORS:
        raise LedgerUnavailable() from None
