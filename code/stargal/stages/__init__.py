"""Thin runners, one per pipeline stage: read inputs through ``paths``, call the pure cores, write atomically."""
