"""Boundary checks with messages that name the argument and say what to do."""

from __future__ import annotations

import math

import numpy as np


def check_features(features, name: str = "features", min_rows: int = 1, dim: int | None = None) -> np.ndarray:
    """A finite float64 ``[N, d]`` array with at least ``min_rows`` rows (and ``d == dim`` if given)."""
    try:
        array = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a numeric [N, d] array: {error}") from error
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [N, d] array, got shape {array.shape}")
    if array.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows (candidates), got {array.shape[0]}")
    if array.shape[1] < 1:
        raise ValueError(f"{name} must have at least one feature column, got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"{name} has {array.shape[1]} feature dimensions, expected {dim} (the model's)")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).any(axis=1).sum())
        raise ValueError(f"{name} contains NaN or inf in {bad} row(s); clean or drop those candidates")
    return array


def check_positive(value: float, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a number > 0, got {value!r}") from error
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def check_query_size(k: int, n_candidates: int, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"{name} must be an integer >= 2 (options per question), got {k!r}")
    if k > n_candidates:
        raise ValueError(
            f"{name}={k} is larger than the pool of {n_candidates} candidates; sample more or lower {name}"
        )
    return int(k)
