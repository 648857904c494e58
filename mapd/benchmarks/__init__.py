"""Benchmarks behind `mapd bench`."""
