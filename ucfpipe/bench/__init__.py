"""Benchmarks that measure side by side in one run: extract, model, train, long."""
