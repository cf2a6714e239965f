"""``edpbrl bench sampler``: which sampler draws the real-data models, for the base model and for a model just
tuned by PAPA (issue 22).

PAPA samples its DDPM with all 1,000 ancestral steps, which a CPU cannot afford in every benchmark round. This
compares cheaper samplers with that one on the same seeds: deterministic DDIM at 50 steps (the package's first
choice) and PAPA's own ancestral sampler at 50 steps (the shipped default since). Each is applied to the base
model and to the model after EPAPA's first round of 10 labels, exactly as ``bench align`` runs it (full
fine-tuning at 1e-5, tuned weights at t >= 400): under DDIM that model washed out to white.

Per (model, sampler): the share the simulated person prefers (well formed and a liked class), the well-formed
rate, the mean pixel (a washed-out image is bright) and seconds per image; 95% intervals over seeds, each seed its
own first round and its own evaluation seeds.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
from diffusers import DDIMScheduler, DDPMScheduler

from ..imaging import save_grid
from ..models.digits import load_pipeline
from ..models.digits.judge import WELL_FORMED, ClassJudge
from ..simulate.people import make_user
from .common import environment, markdown_table, mean_ci, write_json
from .peers.papa import PapaPeer

#: name -> (scheduler class, steps); every one over the model's own 1,000 training betas
SAMPLERS = {"ddim-50": (DDIMScheduler, 50), "ddpm-50": (DDPMScheduler, 50), "ddpm-1000": (DDPMScheduler, 1000)}
USERS = {"digits": "papa-digits", "fashion": "papa-fashion"}
EVAL_SEED = 70_000
FIRST_ROUND = 10  # EPAPA's labels per round


@contextlib.contextmanager
def using(pipe, scheduler_class):
    """``pipe`` sampling with ``scheduler_class`` built from its own scheduler's configuration."""
    original = pipe.scheduler
    pipe.scheduler = scheduler_class.from_config(original.config)
    try:
        yield
    finally:
        pipe.scheduler = original


def run(out: Path, dataset: str = "fashion", seeds: int = 3, n_samples: int = 32) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    judge = ClassJudge(dataset)
    metrics: dict[str, dict[str, list[float]]] = {}
    grid_rows = []
    for seed in range(seeds):
        user = make_user(USERS[dataset], seed=seed, judge=judge)
        peer = PapaPeer(load_pipeline(dataset), trainable="full", learning_rate=1e-5, epapa_k=400, seed=seed)
        for model in ("base", "after EPAPA's first 10 labels"):
            if model != "base":  # the first round of bench align's EPAPA run with this seed
                peer.round(user.rate, FIRST_ROUND, seed * 1_000_003 + FIRST_ROUND)
            for name, (scheduler, steps) in SAMPLERS.items():
                with using(peer.pipe, scheduler):
                    start = time.perf_counter()
                    images = peer.images(n_samples, EVAL_SEED + seed * n_samples, steps=steps)
                    seconds = (time.perf_counter() - start) / n_samples
                labels = judge(images)
                row = metrics.setdefault(f"{model} | {name}", {})
                for key, value in (
                    ("share", user.taste.preferred(labels).mean()),
                    ("well_formed", labels[WELL_FORMED].mean()),
                    ("mean_pixel", images.mean()),
                    ("seconds_per_image", seconds),
                ):
                    row.setdefault(key, []).append(float(value))
                if seed == 0:
                    grid_rows.append(images[:16])
                print(
                    f"seed {seed} {model:30} {name:10} share {row['share'][-1]:.2f} pixel {row['mean_pixel'][-1]:.2f}"
                )
    report = {
        "benchmark": "sampler",
        "dataset": dataset,
        "seeds": seeds,
        "n_samples": n_samples,
        "environment": environment(),
        "rows": {
            key: {
                name: {"per_seed": values, **mean_ci(values, bounds=None if name == "seconds_per_image" else (0, 1))}
                for name, values in row.items()
            }
            for key, row in metrics.items()
        },
        "grid_rows": list(metrics),
    }
    save_grid(np.concatenate(grid_rows), out / f"sampler_{dataset}.png", columns=16, scale=3)
    write_json(out / f"sampler_{dataset}.json", report)
    print(format_table(report))
    return report


def format_table(report: dict) -> str:
    def cell(entry: dict, digits: int = 2) -> str:
        return f"{entry['mean']:.{digits}f} [{entry['lo']:.{digits}f}, {entry['hi']:.{digits}f}]"

    rows = []
    for key, row in report["rows"].items():
        model, sampler = key.split(" | ")
        rows.append(
            [
                model,
                sampler,
                cell(row["share"]),
                cell(row["well_formed"]),
                cell(row["mean_pixel"]),
                f"{np.mean(row['seconds_per_image']['per_seed']):.3f}",
            ]
        )
    header = ["model", "sampler", "share preferred", "well formed", "mean pixel", "s / image"]
    return (
        f"{report['dataset']}: {report['seeds']} seeds x {report['n_samples']} samples, 95% intervals over seeds "
        f"(grid rows, seed 0, top to bottom: {'; '.join(report['grid_rows'])})\n\n" + markdown_table(header, rows)
    )
