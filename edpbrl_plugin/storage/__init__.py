"""The durable SQLite store of sessions, candidates, questions, answers and LoRA versions (no torch)."""
