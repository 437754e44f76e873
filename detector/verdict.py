"""Combine evidence into one verdict. Sources that disagree give `review`, never a wrong id.

Findings a source may report (see `Evidence.finding`):

* `generated` — names one of our released (`published`) generations with accusing strength (a
  trusted manifest we signed, a watermark payload at p ≤ 1e-6 that is in the ledger, a strong
  fingerprint match);
* `unreleased` — names one of our generations that the ledger never released (a publish killed
  halfway, a held, failed or blocked generation): the verdict is `review`, never `generated`;
* `unchecked` — the source needed the ledger and could not ask it (an outage): the verdict is
  `review`, never `not_generated`;
* `weak` — a partial fingerprint match: supports a claim, never makes one;
* `ours_unknown` — our watermark is there but its payload did not decode;
* `tampered` — a signal of ours that fails its checks (altered manifest, unknown payload);
* `ambiguous` — several of our clips match equally well;
* `foreign` — valid provenance from another issuer;
* `absent` — nothing of ours found;
* `error` — the source failed on this clip (never clears it: the verdict is then `review`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provenance.errors import ProvenanceError

from .c2pa_source import C2paSource
from .disclosure import describe
from .evidence import (
    LEDGER_ERRORS,
    LEDGER_UNAVAILABLE,
    Evidence,
    EvidenceSource,
    VerificationContext,
    unchecked,
)
from .fingerprint_source import FingerprintSource, MatchIndex
from .segments import timeline, upload_seconds
from .shared_decode import SharedRead, read_upload
from .watermark_source import WatermarkSource

log = logging.getLogger("detector")


@dataclass
class Verdict:
    """Did we make this clip, which generation, and the evidence for it."""

    verdict: str  # "generated" | "not_generated" | "review"
    generation_id: str | None
    confidence: float
    evidence: list[Evidence] = field(default_factory=list)
    reason: str | None = None
    #: What the clip discloses (`detector.disclosure`): its visible label and the marks found.
    disclosure: dict[str, Any] | None = None
    #: Every span of the upload tied to a published generation (`detector.segments.timeline`).
    segments: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON answer of `credence verify --json` and `POST /v1/verify`."""
        out: dict[str, Any] = {"verdict": self.verdict, "generation_id": self.generation_id,
                               "confidence": round(self.confidence, 6),
                               "evidence": [e.to_dict() for e in self.evidence]}
        if self.reason:
            out["reason"] = self.reason
        if self.disclosure is not None:
            out["disclosure"] = self.disclosure
        out["segments"] = self.segments
        return out


def default_sources(max_seconds: float | None = None, fingerprint_index: MatchIndex | None = None
                    ) -> list[EvidenceSource]:
    """The sources a verification consults, cheapest first.

    `fingerprint_index` replaces the process's own index (e.g. a `ShardedIndex` of shard servers).
    """
    return [C2paSource(), WatermarkSource(), FingerprintSource(max_seconds, fingerprint_index)]


def _agreement(strengths: Sequence[float]) -> float:
    """Confidence of independent sources that agree: 1 - product of their doubts."""
    doubt = 1.0
    for s in strengths:
        doubt *= 1.0 - max(0.0, min(1.0, s))
    return 1.0 - doubt


#: A partial fingerprint match to another generation puts a claim in doubt only when it matched at
#: least this many seconds. One matched second is what chance gives against a large ledger: on
#: the detector bench (1,000 published clips) a watermark payload at p 1e-24 that named the right
#: clip after a 0.7 crop went to `review` because the fingerprint's best match was another clip
#: over 1 of 1 s at 10 bits. A weak match whose seconds are not reported still counts.
CONFLICT_SECONDS = 2


def _substantial(e: Evidence) -> bool:
    """Whether a weak match is enough to contradict another source's generation."""
    seconds = e.details.get("matched_seconds")
    return not isinstance(seconds, int | float) or seconds >= CONFLICT_SECONDS


def combine(evidence: Sequence[Evidence]) -> Verdict:
    """The decision rule: agreement names a generation; conflict or tampering asks a human."""
    items = list(evidence)
    strong = [e for e in items if e.finding == "generated" and e.generation_id]
    claimed = {e.generation_id for e in strong}
    named = {e.generation_id for e in items
             if (e.finding == "generated" or (e.finding == "weak" and _substantial(e))) and e.generation_id}
    findings = {e.finding for e in items}

    def review(reason: str) -> Verdict:
        return Verdict("review", None, 0.5, items, reason)

    unreleased = [e for e in items if e.finding == "unreleased"]
    if unreleased:
        return review(str(unreleased[0].details.get("reason") or "the generation was never released"))
    if "unchecked" in findings:
        # An outage may hide a match or a release status: nothing can be cleared or confirmed.
        return review(f"{LEDGER_UNAVAILABLE}: the clip could not be checked against the ledger")
    montage = _montage_spans(items)
    if len(claimed) > 1:
        chosen = _best_supported(items, claimed, montage)
        if chosen is None:
            return review("sources name different generations: " + _who(strong)
                          + "; open each generation and compare it with the upload")
        claimed = {chosen}
        named -= montage - claimed  # the other parts of the compilation are not a conflict
    if claimed:
        generation_id = next(iter(claimed))
        named -= montage - claimed
        if len(named) > 1:
            others = sorted(str(g) for g in named - {generation_id})
            return review(f"{_who(strong)}, but a partial match points at another generation ({', '.join(others)}); "
                          "compare the upload with both before answering")
        if "tampered" in findings:
            return review(_tampered_reason(items))
        if "foreign" in findings:
            return review("our signal in a clip that carries another issuer's valid manifest")
        if "ambiguous" in findings and not any(e.source != "fingerprint" for e in strong):
            return review(_ambiguous_reason(items))
        support = [e.strength for e in items if e.generation_id == generation_id or e.finding == "ours_unknown"]
        return Verdict("generated", generation_id, _agreement(support), items)
    if "tampered" in findings:
        return review(_tampered_reason(items))
    if "ours_unknown" in findings:
        weak = sorted({str(e.generation_id) for e in items if e.finding == "weak" and e.generation_id})
        hint = (f"; the fingerprint's nearest published clip is {', '.join(weak)}: compare the upload with it"
                if weak else "; no published clip's fingerprint matches, so it is probably a heavily edited copy: "
                "ask the uploader for the original file")
        return review("our watermark is present but does not name a generation" + hint)
    if "ambiguous" in findings:
        return review(_ambiguous_reason(items))
    if "error" in findings:
        return review("an evidence source failed on this clip")
    doubt = max((e.strength for e in items if e.finding in ("weak",)), default=0.0)
    reason = "valid provenance from another issuer" if "foreign" in findings else None
    return Verdict("not_generated", None, 1.0 - doubt, items, reason)


def _tampered_reason(items: Sequence[Evidence]) -> str:
    """Which of our signals fails its checks and how (an altered manifest, a payload we never issued)."""
    parts = [f"{e.source}: {(e.details or {}).get('reason') or 'fails its checks'}" for e in items
             if e.finding == "tampered"]
    return "a signal of ours fails its checks (" + "; ".join(parts) + "): the clip may be forged or altered"


def _who(strong: Sequence[Evidence]) -> str:
    """Which source names which generation, for a reviewer: "watermark names g1, fingerprint names g2"."""
    return ", ".join(f"{e.source} names {e.generation_id}" for e in strong)


def _ambiguous_reason(items: Sequence[Evidence]) -> str:
    """The fingerprint's own account of an ambiguity (it names the clips, seconds and distances)."""
    for e in items:
        if e.finding == "ambiguous" and (e.details or {}).get("reason"):
            return str(e.details["reason"])
    return "several published clips match"


def _montage_spans(items: Sequence[Evidence]) -> set[str]:
    """The generations of the fingerprint's timeline when it found two or more over separate seconds."""
    spans = [span for e in items if e.source == "fingerprint" for span in (e.details or {}).get("spans", [])]
    generations = {str(span["generation_id"]) for span in spans if span.get("generation_id")}
    return generations if len(generations) > 1 else set()


def _best_supported(items: Sequence[Evidence], claimed: set[str | None], montage: set[str]) -> str | None:
    """In a compilation of our clips, the generation most sources support; None if not one or a tie.

    Sources may name different generations without contradicting each other when the upload is
    a montage: the watermark reads one clip's mark, the fingerprint's best match is another part.
    That holds only when the fingerprint placed every claimed generation on its own seconds. Each
    claim counts one, and a fingerprint span of a generation the fingerprint did not claim counts
    one more; the verdict names the generation with the most, and a tie asks a person.
    """
    if not montage or not claimed <= montage:
        return None
    fingerprint_claim = next((e.generation_id for e in items if e.source == "fingerprint"
                              and e.finding == "generated"), None)
    support = {g: sum(1 for e in items if e.finding == "generated" and e.generation_id == g)
               + int(g in montage and g != fingerprint_claim) for g in claimed if g is not None}
    ranked = sorted(support.items(), key=lambda kv: -kv[1])
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None
    return ranked[0][0] if ranked else None


def _shared_read(path: Path, context: VerificationContext,
                 readers: Sequence[Any]) -> SharedRead | BaseException | None:
    """One decode for every source that reads pixels (`shared_decode`), or the error it failed with.

    `InvalidVideo` (the clip itself is bad) is raised: the caller's 4xx. Any other failure is
    handed to the sources, each of which then reports an `error` finding.
    """
    keys = list(context.watermark_keys) if any(s.name == "watermark" for s in readers) else []
    fingerprint = [s for s in readers if s.name == "fingerprint"]
    want_fingerprint = bool(fingerprint) and context.ledger is not None
    max_seconds = getattr(fingerprint[0], "max_seconds", None) if fingerprint else None
    if not keys and not want_fingerprint:
        return None  # neither can read (no keys, no ledger): each source says why without decoding
    try:
        return read_upload(path, keys, max_seconds=max_seconds, fingerprint=want_fingerprint)
    except ProvenanceError:
        raise
    except Exception as exc:
        log.exception("the shared decode failed on %s", path)
        return exc


def _inspect(source: EvidenceSource, path: Path, context: VerificationContext,
             read: SharedRead | BaseException | None = None) -> Evidence:
    """One source's evidence; a source that breaks on an odd file is reported, not fatal."""
    try:
        if read is not None and hasattr(source, "inspect_read"):
            if isinstance(read, BaseException):
                raise read
            return source.inspect_read(path, context, read)
        return source.inspect(path, context)
    except LEDGER_ERRORS:
        # Checked before ProvenanceError (LedgerError is one): an outage is not the clip's fault.
        log.warning("evidence source %s could not ask the ledger", source.name, exc_info=True)
        return unchecked(source.name, {})
    except ProvenanceError:
        raise  # the clip itself is bad (InvalidVideo): the caller's 4xx
    except Exception as exc:
        log.exception("evidence source %s failed on %s", source.name, path)
        return Evidence(source.name, None, "error", 0.0, {"error": _public_error(exc, path)})


def _public_error(exc: BaseException, path: Path) -> str:
    """The error as a verdict may show it: without the server's path of the clip (a temporary name)."""
    text = f"{type(exc).__name__}: {exc}"
    for name in (str(path), path.name):
        text = text.replace(name, "the clip")
    return text[:300]


def verify(path: Path, context: VerificationContext,
           sources: Sequence[EvidenceSource] | None = None) -> Verdict:
    """The whole verification flow: every source inspects the clip, then `combine` decides.

    The watermark and the fingerprint read one decode of the upload (`shared_decode`: sampled
    where the sources allow, in full over the watermark's look windows, hashing on two threads);
    the other sources read the file themselves. Evidence keeps the sources' order, and every
    source's evidence is in the answer; `disclosure` says what the clip discloses (its visible
    label, and whether the manifest and the mark were found).
    """
    chosen = list(sources or default_sources())
    readers = [s for s in chosen if hasattr(s, "inspect_read")]
    if readers:
        read = _shared_read(path, context, readers)
        evidence = [_inspect(s, path, context, read) for s in chosen]
    elif len(chosen) == 1:
        evidence = [_inspect(chosen[0], path, context)]
    else:
        with ThreadPoolExecutor(max_workers=len(chosen), thread_name_prefix="verify") as pool:
            evidence = list(pool.map(lambda source: _inspect(source, path, context), chosen))
    verdict = combine(evidence)
    verdict.disclosure = describe(verdict.evidence, verdict.verdict, verdict.generation_id, context)
    verdict.segments = timeline(verdict.evidence, upload_seconds(path))
    return verdict


def matched_record(context: VerificationContext, generation_id: str | None) -> dict[str, Any] | None:
    """The ledger record a `generated` verdict names: who made the clip, with what, when.

    None when there is no generation or the ledger cannot be asked (the verdict says why).
    """
    if generation_id is None or context.ledger is None:
        return None
    try:
        gen = context.ledger.get_generation(generation_id)
    except ProvenanceError:
        return None
    if gen is None or gen.status != "published":
        return None
    files = [{"sha256": f.sha256, "manifest_label": f.manifest_label, "label_mode": f.label_mode,
              "label_text": f.label_text, "manifest_verified": f.manifest_verified} for f in gen.files]
    return {"generation_id": gen.id, "client_id": gen.client_id, "model": gen.model, "model_hash": gen.model_hash,
            "policy_version": gen.policy_version, "mark_id": gen.mark_hex, "created_at": gen.created_at.isoformat(),
            "published_at": gen.finished_at.isoformat() if gen.finished_at else None, "files": files}
