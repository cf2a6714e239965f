"""Shared fixtures. Heavy objects (the embedded pipeline, encoder) load once per test session."""

from __future__ import annotations

import os

# One BLAS thread per process keeps the CPU tests stable on a 2-core machine.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
