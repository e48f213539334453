"""Helpers of the benchmark runner (benchmarks/run.py): data, measurement, reporting."""
