"""Credence: moderation."""
