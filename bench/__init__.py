"""Benchmarks: `python bench/run.py` (a script that prints figures, not a test)."""
