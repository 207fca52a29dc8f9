"""Benchmarks of the harness (not part of the installed package). See docs/performance.md."""
