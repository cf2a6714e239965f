"""Statistics and output helpers shared by the benchmarks."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import stats


def mean_ci(
    values, axis: int = 0, level: float = 0.95, bounds: tuple[float, float] | None = None
) -> dict[str, list | float]:
    """Mean and a Student-t confidence interval over ``axis`` (the seeds), clipped to ``bounds`` when the
    quantity cannot leave them (a share of samples: with 5 seeds the t interval alone can pass 1)."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[axis]
    mean = values.mean(axis=axis)
    if n < 2:
        half = np.zeros_like(mean)
    else:
        half = stats.t.ppf(0.5 + level / 2, n - 1) * values.std(axis=axis, ddof=1) / np.sqrt(n)
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = np.clip(lo, *bounds), np.clip(hi, *bounds)
    return {"mean": np.round(mean, 5).tolist(), "lo": np.round(lo, 5).tolist(), "hi": np.round(hi, 5).tolist()}


def bootstrap_ci(statistic: Callable[[np.ndarray], float], n_seeds: int, n_boot: int = 2000, seed: int = 0):
    """Percentile bootstrap over seeds: ``statistic(seed_indices)`` on resampled seed sets -> (lo, hi)."""
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(rng.integers(0, n_seeds, n_seeds)) for _ in range(n_boot)])
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def environment() -> dict:
    import torch

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_json(path: str | Path, data: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
    return path


def timed(fn: Callable, repeat: int, warmup: int = 1) -> np.ndarray:
    """Wall seconds of ``repeat`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return np.array(times)


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
