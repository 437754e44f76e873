"""Moderation errors. Every one of them means "no decision", and no decision means no generation."""

from __future__ import annotations


class ModerationError(Exception):
    """Moderation could not decide; the caller must not generate (fails closed)."""


class InvalidPrompt(ModerationError):
    """The prompt itself is unusable (empty, too long, not text): the caller's mistake."""


class ModerationUnavailable(ModerationError):
    """The moderator cannot run here (bad policy, missing model): the operator's problem, not the user's."""


class PolicyError(ModerationUnavailable):
    """The policy file is missing or invalid; the message names the field."""


class ModelMissing(ModerationUnavailable):
    """A model file the moderator needs (sentence model, trained heads, a frame classifier) is missing."""
