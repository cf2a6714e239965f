"""Simulated people for evaluation and benchmarks (teachers, image users, a terminal asker); the loop never
imports this package."""
