"""Benchmarking: datasets, the resumable eval runner, its SQLite store, metrics and reports."""
