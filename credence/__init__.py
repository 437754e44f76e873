"""Credence: credence."""
