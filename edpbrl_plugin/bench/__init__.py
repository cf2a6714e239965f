"""Benchmarks (``edpbrl bench ...``): JSON + plots with seeds and confidence intervals, never timed tests."""
