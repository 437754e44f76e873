"""Credence: policies."""
