"""``edpbrl bench select``: time to choose one question among N candidates, against two baselines.

For N = 64 / 256 / 1024 candidates at d = 64 / 256 / 768 (model fitted on 20 answers), it times the
default strategy (θ-aware D-optimal, all pairs in matrix form; the median of ``repeat`` calls), a greedy batch
of 8, a K = 4 set (the best pair grown greedily), a
straightforward per-pair numpy loop of the same criterion, and BoTorch's analytic EUBO
(``AnalyticExpectedUtilityOfBestOption`` on a PairwiseGP over all candidate pairs). The per-pair loop
and EUBO are timed on a random subset of at most ``max_pairs`` pairs and scaled to all pairs (both
are linear in the number of pairs); the JSON says so per row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..learning.answers import Answer
from ..learning.choice import ChoiceModel
from ..querying.strategies import DEFAULT_STRATEGY, make_strategy
from .common import environment, markdown_table, timed, write_json
from .peers.botorch import eubo_seconds

SIZES = (64, 256, 1024)
DIMS = (64, 256, 768)


def _fitted(n: int, d: int, seed: int) -> tuple[np.ndarray, ChoiceModel, list[Answer]]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, d)) / np.sqrt(d)
    theta = rng.normal(size=d)
    answers = []
    for _ in range(20):
        a, b = rng.choice(n, 2, replace=False)
        answers.append(Answer((a, b), 0 if (features[a] - features[b]) @ theta > 0 else 1))
    return features, ChoiceModel().fit(features, answers), answers


def naive_d_optimal(features: np.ndarray, model: ChoiceModel, pairs: np.ndarray) -> tuple[int, int]:
    """The per-pair loop a first implementation would write: z, zᵀΣz and log(1 + w zᵀΣz) pair by pair."""
    best, best_gain = None, -np.inf
    for a, b in pairs:
        z = features[a] - features[b]
        w = model.pair_weight(model.theta_ @ z)
        gain = np.log1p(w * (z @ model.covariance_ @ z))
        if gain > best_gain:
            best, best_gain = (a, b), gain
    return best


def run(out: Path, repeat: int = 20, max_pairs: int = 4000, seed: int = 0) -> dict:
    try:
        import botorch  # noqa: F401

        with_peer = True
    except ImportError:
        print("botorch is not installed (pip install 'edpbrl[bench]'); skipping the EUBO column")
        with_peer = False
    strategy = make_strategy(DEFAULT_STRATEGY)
    rows = []
    for d in DIMS:
        for n in SIZES:
            features, model, answers = _fitted(n, d, seed)
            ours = timed(lambda: strategy.select(features, model, rng=0), repeat)
            sets = timed(lambda: strategy.select(features, model, k=4, rng=0), max(3, repeat // 4))
            batch = timed(lambda: strategy.select_batch(features, model, batch=8, rng=0), max(3, repeat // 4))
            i, j = np.triu_indices(n, 1)
            subset = np.random.default_rng(seed).choice(len(i), min(len(i), max_pairs), replace=False)
            pairs = np.stack([i[subset], j[subset]], axis=1)
            scale = len(i) / len(pairs)
            naive = timed(lambda: naive_d_optimal(features, model, pairs), 1, warmup=0).min() * scale
            row = {
                "n": n,
                "d": d,
                "pairs": int(len(i)),
                "timed_pairs": int(len(pairs)),
                "ours_ms": 1000 * float(np.median(ours)),
                "ours_ms_p90": 1000 * float(np.percentile(ours, 90)),
                "batch8_ms": 1000 * float(np.median(batch)),
                "k4_ms": 1000 * float(np.median(sets)),
                "naive_ms": 1000 * float(naive),
                "speedup_vs_naive": float(naive / np.median(ours)),
            }
            if with_peer:
                seconds, diff = eubo_seconds(features, answers, pairs)
                row.update(
                    eubo_ms=1000 * seconds * scale,
                    speedup_vs_eubo=seconds * scale / float(np.median(ours)),
                    eubo_joint_posterior_max_abs_diff=diff,
                )
            rows.append(row)
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
    report = {
        "benchmark": "select",
        "strategy": DEFAULT_STRATEGY,
        "repeat": repeat,
        "seed": seed,
        "environment": environment(),
        "rows": rows,
    }
    write_json(out / "select.json", report)
    print(format_table(rows))
    return report


def format_table(rows: list[dict]) -> str:
    header = [
        "N",
        "d",
        "ours (ms)",
        "batch of 8 (ms)",
        "K = 4 set (ms)",
        "per-pair loop (ms)",
        "× vs loop",
        "BoTorch EUBO (ms)",
        "× vs EUBO",
    ]
    body = [
        [
            r["n"],
            r["d"],
            f"{r['ours_ms']:.1f}",
            f"{r['batch8_ms']:.1f}",
            f"{r['k4_ms']:.1f}" if "k4_ms" in r else "-",
            f"{r['naive_ms']:.0f}",
            f"{r['speedup_vs_naive']:.0f}",
            f"{r['eubo_ms']:.0f}" if "eubo_ms" in r else "-",
            f"{r['speedup_vs_eubo']:.0f}" if "eubo_ms" in r else "-",
        ]
        for r in rows
    ]
    return markdown_table(header, body)
