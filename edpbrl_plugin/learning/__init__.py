"""The bottom layer: the answer vocabulary, the choice models behind every answer, and their metrics
(numpy and scipy only, so the store can use the vocabulary without importing torch)."""
