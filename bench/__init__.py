"""Benchmarks: run with `python -m bench.<name>`; they print ratios and operation counts, never timings to assert."""
