"""Benchmarks (not tests): run on a GPU machine, print one JSON line per measured system."""
