"""Benchmarks and real-model fixtures for int8kit (not part of the installed package)."""
