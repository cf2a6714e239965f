"""``edpbrl bench design``: Frank-Wolfe prompt-design time and objective per iteration.

H = 4, 5, 6 slots with 2,500 words in total, d = 768, K = 4 (synthetic word features, the paper's
scale). Times the solver with the authors' step schedule and with the backtracking line search, each block by
block (the authors', one policy per step) and jointly (every policy per step from one gradient), and a
naive step that recomputes the information matrix from every word's probability (the reference formula)
and inverts it in float64: timed for a few steps and reported per step, since it is linear in steps.
Reports the objective at the uniform start, its lowest point along the way and the design returned (the
best iterate).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..querying.design import PromptDesign, WordSlots, theta_agnostic_information
from .common import environment, markdown_table, write_json

TOTAL_WORDS = 2500
DIM = 768
K = 4
#: (step, schedule) pairs timed
SOLVERS = [("authors", "block"), ("line_search", "block"), ("authors", "joint"), ("line_search", "joint")]


def make_slots(n_slots: int, seed: int) -> WordSlots:
    rng = np.random.default_rng(seed)
    per_slot = TOTAL_WORDS // n_slots
    scales = np.exp(-np.arange(DIM) / 96)  # CLIP-like decaying spectrum
    features = [rng.normal(size=(per_slot, DIM)) * scales / np.sqrt(DIM) * 4 for _ in range(n_slots)]
    return WordSlots.from_lists([[f"s{h}_{i}" for i in range(per_slot)] for h in range(n_slots)], features)


def naive_step(slots: WordSlots, policies: list[list[np.ndarray]], budget: int, reg: float) -> np.ndarray:
    """One Frank-Wolfe gradient evaluation from scratch: Ĩ from all words, M⁻¹, per-word rewards of policy 0."""
    info = theta_agnostic_information(slots, policies, K)
    m = info + reg / (slots.n_slots * budget) * np.eye(slots.dim)
    inv = np.linalg.inv(m)
    grad = inv @ inv
    rewards = []
    for h, table in enumerate(slots.features):
        others = sum(p[h] @ table for p in policies[1:])
        rewards.append(((K - 1) * np.einsum("ad,de,ae->a", table, grad, table) - 2 * table @ grad @ others) / K**2)
    return np.concatenate(rewards)


def run(out: Path, repeat: int = 3, seed: int = 0, naive_steps: int = 3) -> dict:
    rows, curves = [], {}
    for n_slots in (4, 5, 6):
        slots = make_slots(n_slots, seed)
        for step, schedule in SOLVERS:
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                design = PromptDesign(k=K, budget=50, step=step, schedule=schedule).fit(slots)
                times.append(time.perf_counter() - start)
            curves[f"H={n_slots} {step} {schedule}"] = [s.objective for s in design.history_]
            rows.append(
                {
                    "slots": n_slots,
                    "words": sum(len(w) for w in slots.words),
                    "d": DIM,
                    "k": K,
                    "step": step,
                    "schedule": schedule,
                    "steps": len(design.history_),
                    "seconds": float(np.median(times)),
                    "objective_start": design.history_[0].objective,
                    "objective_lowest": min(s.objective for s in design.history_),
                    "objective_end": design.objective_,
                    "best_gap": design.best_gap_,
                }
            )
        uniform = [[np.full(len(f), 1 / len(f)) for f in slots.features] for _ in range(K)]
        start = time.perf_counter()
        for _ in range(naive_steps):
            naive_step(slots, uniform, 50, 1.0)
        naive_per_step = (time.perf_counter() - start) / naive_steps
        for row in rows[-len(SOLVERS) :]:
            row["naive_seconds_per_step"] = naive_per_step
            row["naive_seconds_total"] = naive_per_step * row["steps"]
            row["speedup_vs_naive"] = naive_per_step * row["steps"] / row["seconds"]
        print(*rows[-len(SOLVERS) :], sep="\n")
    report = {
        "benchmark": "design",
        "seed": seed,
        "repeat": repeat,
        "environment": environment(),
        "rows": rows,
        "objective_per_step": curves,
    }
    write_json(out / "design.json", report)
    _plot(curves, out / "design.png")
    print(format_table(rows))
    return report


def _plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, values in curves.items():
        ax.plot(values, label=name, ls="--" if "line_search" in name else "-")
    ax.set_xlabel("Frank-Wolfe step")
    ax.set_ylabel("objective −tr(M⁻¹)")
    ax.set_yscale("symlog")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_table(rows: list[dict]) -> str:
    header = [
        "H",
        "words",
        "step",
        "schedule",
        "FW steps",
        "time (s)",
        "naive (s, est.)",
        "× faster",
        "objective start → lowest → returned",
        "best gap",
    ]
    body = [
        [
            r["slots"],
            r["words"],
            r["step"],
            r["schedule"],
            r["steps"],
            f"{r['seconds']:.2f}",
            f"{r['naive_seconds_total']:.0f}",
            f"{r['speedup_vs_naive']:.0f}",
            f"{r['objective_start']:.7g} → {r['objective_lowest']:.7g} → {r['objective_end']:.7g}",
            f"{r['best_gap']:.3g}",
        ]
        for r in rows
    ]
    return markdown_table(header, body)
