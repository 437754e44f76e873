"""Typed errors of the provenance layer.

Every error that a user's input can cause derives from `ProvenanceError`; the CLI maps it to
exit code 2 and the HTTP app to a 4xx. Anything else is a bug and surfaces as such.
"""

from __future__ import annotations


class ProvenanceError(Exception):
    """Base of the errors a caller can act on (bad input, missing key, unwritable output)."""


class InvalidVideo(ProvenanceError):
    """The file is missing, empty, truncated, not a video, or too small to work with."""


class VideoTooLarge(InvalidVideo):
    """The clip is a readable video but over the decoding budget (frame size, total pixels, duration).

    A subclass of `InvalidVideo` so that every caller that refuses a bad upload refuses this one
    too; the HTTP app answers it with 413 rather than 422.
    """


class UnsupportedFormat(ProvenanceError):
    """The container cannot carry what was asked of it (C2PA cannot be embedded in WebM/MKV)."""


class KeyMissing(ProvenanceError):
    """A signing certificate, private key or watermark secret is not where settings say."""


class SigningUnavailable(ProvenanceError):
    """C2PA signing failed; nothing is released when this is raised."""


class OutputNotWritable(ProvenanceError):
    """The output path cannot be written (missing folder, read-only, a directory)."""


class LedgerError(ProvenanceError):
    """The ledger cannot be reached or is not migrated to the schema this code expects."""
