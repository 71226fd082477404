"""Vectorised numpy process models (no gymnasium, no torch: usable at runtime)."""
