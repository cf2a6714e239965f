"""Peers the benchmarks compare against, run on the same posterior and pools (BoTorch)."""
