"""Benchmarks: speed of queries and mesh extraction against the straightforward implementation."""
