"""Credence: provenance."""
