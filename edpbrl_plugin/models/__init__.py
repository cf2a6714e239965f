"""Embedded models shipped with the package (each a leaf over the feature-encoder interface)."""
