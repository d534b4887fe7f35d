"""Helpers for tests, the demo and the benchmarks; nothing shipped imports them."""
