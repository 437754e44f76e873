"""The detector: did Credence make this clip? Evidence sources combined into one verdict."""

from .c2pa_source import C2paSource
from .evidence import Evidence, EvidenceSource, LedgerState, LedgerUnavailable, VerificationContext
from .fingerprint_source import FingerprintSource
from .verdict import Verdict, combine, default_sources, matched_record, verify
from .watermark_source import WatermarkSource

__all__ = [
           "C2paSource",
           "Evidence",
           "EvidenceSource",
           "FingerprintSource",
           "LedgerState",
           "LedgerUnavailable",
           "Verdict",
           "VerificationContext",
           "WatermarkSource",
           "combine",
           "default_sources",
           "matched_record",
           "verify",
]
