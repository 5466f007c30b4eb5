"""Detached local runs (filled in below)."""
