"""``edpbrl bench speed``: seconds per stage of the loop, before vs after the speed work, in one run.

Part 1, the embedded model: two rounds of the default loop (24 candidates, 10 questions answered by a
simulated person, one LoRA update, 64 evaluation images) per seed, each seed and setting in a fresh process
(so its peak memory is its own and nothing is cached in memory), for

* ``before``: what a round cost before: a prompted batch (``"circle"``: two UNet passes per step, what an
  empty prompt cost before guidance skipped it) and an empty disk cache, so the session's first update samples
  its base pool (as every new session did);
* ``after``: today's loop on a fresh install: the empty prompt (one pass per step) and the base pool shipped
  with the embedded model.

The learning settings are the same in both. Savings that are code, not settings (one batched training pass,
early-stopping samples re-scored instead of re-sampled) are in both columns, so the ratios understate the
change. The guidance saving alone is timed too (``unconditional sampling``).

Part 2, a Stable Diffusion 1.5-shaped pipeline with random weights on this CPU: the cost of a UNet pass, a
VAE decode and a LoRA training pass at 512x512, and from them a projected round at SD's
:data:`~edpbrl_plugin.tuning.updater.LATENT_DEFAULTS` (on a GPU, run it there for that card's numbers).
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .common import environment, markdown_table, mean_ci, timed, write_json

#: The prompt of each setting's loop: "circle" costs what the empty prompt cost before (a guided pass).
PROMPTS = {"before": "circle", "after": ""}
SETTINGS = tuple(PROMPTS)
STAGES = ("sample", "encode", "select", "record", "refit", "update", "evaluate")
CANDIDATES, QUESTIONS, EVAL_IMAGES = 24, 10, 64


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def _rounds(setting: str, seed: int, cache: str, threads: int, rounds: int = 2) -> dict:
    """Runs in a fresh process: ``rounds`` rounds of the loop under ``setting``; seconds per stage and round."""
    os.environ["EDPBRL_CACHE"] = cache
    import torch

    from ..loop.loop import PersonalizationLoop
    from ..loop.session import PersonalizationSession
    from ..models.shapes import AttributeJudge, EmbeddedEncoder, load_shapes_pipeline
    from ..simulate.people import make_user
    from ..tuning.updater import UpdateConfig

    torch.set_num_threads(threads)
    pipe, encoder = load_shapes_pipeline(), EmbeddedEncoder()
    person = make_user("blue-outline", seed=seed, judge=AttributeJudge(encoder))
    with tempfile.TemporaryDirectory() as tmp:
        session = PersonalizationSession(Path(tmp) / "store.db", "speed", encoder=encoder)
        loop = PersonalizationLoop(session, pipe, UpdateConfig(seed=seed), [PROMPTS[setting]])
        per_round = []
        for round_ in range(rounds):
            seconds = {}
            start = time.perf_counter()
            candidates, images = loop.sample(CANDIDATES, seed * 1000 + round_ * CANDIDATES)
            seconds["sample"] = time.perf_counter() - start
            start = time.perf_counter()
            encoder.encode(images)  # what add_candidates spent on features (it is inside "sample" too)
            seconds["encode"] = time.perf_counter() - start
            seconds["sample"] -= seconds["encode"]
            start = time.perf_counter()
            questions = loop.ask(QUESTIONS, seed=seed + round_, candidate_ids=candidates.ids)
            seconds["select"] = time.perf_counter() - start
            answers = [person.answer(session.question_images(q.id)) for q in questions]  # the person, not timed
            start = time.perf_counter()
            for question, answer in zip(questions, answers, strict=True):
                loop.record(question.id, answer)
            seconds["record"] = time.perf_counter() - start
            start = time.perf_counter()
            session.refit()
            seconds["refit"] = time.perf_counter() - start
            start = time.perf_counter()
            report, _ = loop.update()
            seconds["update"] = time.perf_counter() - start
            start = time.perf_counter()
            loop.images(EVAL_IMAGES, 10_000)
            seconds["evaluate"] = time.perf_counter() - start
            per_round.append({"seconds": seconds, "steps": report.steps, "stopped": report.stopped})
    return {"setting": setting, "seed": seed, "rounds": per_round, "peak_mb": _peak_mb()}


def _unconditional(threads: int, repeat: int) -> dict:
    """24 unconditional samples as before (the guided pass run on the empty prompt, as a non-empty prompt still
    is) vs now (one pass): the same images at half the UNet work."""
    import torch

    from ..models.shapes import load_shapes_pipeline
    from ..tuning.sampling import sample_images

    torch.set_num_threads(threads)
    pipe = load_shapes_pipeline()
    timings = {"guided": [], "plain": []}
    for i in range(repeat + 1):
        for name, prompt in (("guided", "circle"), ("plain", "")):
            start = time.perf_counter()
            sample_images(pipe, [prompt] * CANDIDATES, range(i * CANDIDATES, (i + 1) * CANDIDATES))
            if i:  # the first call warms up
                timings[name].append(time.perf_counter() - start)
    return timings


def _sd_costs(threads: int, repeat: int) -> dict:
    """Seconds of SD 1.5-shaped pieces at 512x512 (64x64 latents) on this CPU, each at batch 1: a prompt
    encoding, a UNet pass without gradients (sampling, reference passes), a UNet pass with the LoRA's
    gradients (forward + backward, training) and a VAE decode."""
    import torch

    from ..models.random_sd import random_sd15_pipeline
    from ..tuning.adapters import add_adapter, trainable_parameters

    torch.set_num_threads(threads)
    pipe = random_sd15_pipeline()
    unet, vae = pipe.unet, pipe.vae
    add_adapter(unet, rank=4, alpha=4.0)
    params = trainable_parameters(unet)
    ids = pipe.tokenizer(["a photo"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    latents, t = torch.randn(1, 4, 64, 64), torch.tensor([500])
    with torch.no_grad():
        text = pipe.text_encoder(ids)[0]

    def forward_backward():
        unet(latents, t, encoder_hidden_states=text).sample.pow(2).mean().backward()
        for p in params:
            p.grad = None

    with torch.no_grad():
        costs = {
            "encode_prompt": _seconds(lambda: pipe.text_encoder(ids), repeat),
            "unet_forward": _seconds(lambda: unet(latents, t, encoder_hidden_states=text), repeat),
            "vae_decode": _seconds(lambda: vae.decode(latents), repeat),
        }
    costs["unet_forward_backward"] = _seconds(forward_backward, repeat)
    return costs


def _seconds(fn, repeat: int) -> list[float]:
    return timed(fn, repeat).tolist()


def _project_sd(costs: dict) -> dict:
    """One SD round at the latent defaults from the measured batch-1 pieces (a CPU's cost is about linear in
    the batch): 24 candidates of guided steps (two UNet passes each) and a decode; the update's optimiser
    steps (per step: winners, losers and distillation images with gradients, winners and losers again for the
    reference), its early-stopping samples and, the first time on a machine, its base pool."""
    from ..tuning.updater import LATENT_DEFAULTS, UpdateConfig

    config = UpdateConfig(**LATENT_DEFAULTS)
    forward, backward, decode = (
        float(np.median(costs[k])) for k in ("unet_forward", "unet_forward_backward", "vae_decode")
    )
    image = config.num_inference_steps * 2 * forward + decode
    batch = config.batch_size
    checks = config.steps // config.eval_every  # the first check re-scores the last update's samples
    return {
        "candidates_24": CANDIDATES * image,
        "update_training": config.steps * (3 * batch * backward + 2 * batch * forward),
        "update_checks": checks * config.eval_samples * image,
        "base_pool_once": config.distill_samples * image,
        "assumptions": (
            f"{config.num_inference_steps} guided steps per image; {config.steps} optimiser steps of {batch} pairs "
            f"+ {batch} pool images; {config.eval_samples} samples per check; a {config.distill_samples}-image pool"
        ),
    }


def run(out: Path, seeds: int = 5, repeat: int = 3, sd: bool = True) -> dict:
    """Every setting x seed in its own process (one at a time, all cores), then the SD part; writes
    ``speed.json`` and prints the tables."""
    threads = os.cpu_count() or 1
    out.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    runs = []
    for seed in range(seeds):
        for setting in SETTINGS:
            with tempfile.TemporaryDirectory() as cache:  # a machine that never ran the loop
                record = _in_child(context, _rounds, setting, seed, cache, threads)
            runs.append(record)
            totals = ", ".join(f"{sum(r['seconds'].values()):.1f}" for r in record["rounds"])
            updates = ", ".join(f"{r['seconds']['update']:.1f}" for r in record["rounds"])
            print(
                f"{setting:7} seed {seed}: round seconds {totals}, update {updates}, peak {record['peak_mb']:.0f} MB",
                flush=True,
            )
    unconditional = _in_child(context, _unconditional, threads, max(repeat, 5))
    report = {
        "benchmark": "speed",
        "environment": environment(),
        "seeds": seeds,
        "prompts": PROMPTS,
        "runs": runs,
        "summary": summarise(runs),
        "unconditional_sampling": {k: mean_ci(v) for k, v in unconditional.items()},
    }
    if sd:
        costs = _in_child(context, _sd_costs, threads, repeat)
        report["sd15_cpu"] = {"seconds": costs, "projected_round_seconds": _project_sd(costs)}
    write_json(out / "speed.json", report)
    print(format_report(report))
    return report


def _in_child(context, fn, *args):
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


def summarise(runs: list[dict]) -> dict:
    """Per setting, round and stage: mean seconds with a 95% interval over seeds; per round, the before/after
    ratio of each stage and of the whole round with a 95% interval over seeds (ratios of per-seed times)."""
    summary = {}
    by = {s: sorted((r for r in runs if r["setting"] == s), key=lambda r: r["seed"]) for s in SETTINGS}
    for setting, rows in by.items():
        if not rows:
            continue
        summary[setting] = {
            "peak_mb": mean_ci([r["peak_mb"] for r in rows]),
            "rounds": [
                {
                    **{stage: mean_ci([r["rounds"][i]["seconds"][stage] for r in rows]) for stage in STAGES},
                    "total": mean_ci([sum(r["rounds"][i]["seconds"].values()) for r in rows]),
                }
                for i in range(len(rows[0]["rounds"]))
            ],
        }
    for setting in ("after",):
        if not by.get(setting) or not by.get("before"):
            continue
        summary[f"ratio before/{setting}"] = [
            {
                stage: mean_ci(
                    [
                        _stage(b["rounds"][i], stage) / max(_stage(a["rounds"][i], stage), 1e-9)
                        for b, a in zip(by["before"], by[setting], strict=True)
                    ]
                )
                for stage in (*STAGES, "total")
            }
            for i in range(len(by["before"][0]["rounds"]))
        ]
    return summary


def _stage(round_: dict, stage: str) -> float:
    return sum(round_["seconds"].values()) if stage == "total" else round_["seconds"][stage]


def format_report(report: dict) -> str:
    summary, env = report["summary"], report["environment"]
    lines = [
        f"edpbrl bench speed: {report['seeds']} seeds, {env['cpu_count']} CPU cores ({env['processor']}), "
        f"torch {env['torch']}; mean seconds [95% interval]"
    ]

    def cell(ci: dict) -> str:
        return f"{ci['mean']:.2f} [{ci['lo']:.2f}, {ci['hi']:.2f}]"

    for i, title in enumerate(("round 1 (the session's first update: before, it sampled the base pool)", "round 2")):
        header = ["stage (s)", *SETTINGS, "before/after"]
        rows = []
        for stage in (*STAGES, "total"):
            row = [stage] + [cell(summary[s]["rounds"][i][stage]) for s in SETTINGS]
            row.append(cell(summary["ratio before/after"][i][stage]) + "x")
            rows.append(row)
        lines += ["", title, markdown_table(header, rows)]
    lines.append(
        "peak memory (MB): " + ", ".join(f"{s} {cell(summary[s]['peak_mb'])}" for s in SETTINGS if s in summary)
    )
    u = report["unconditional_sampling"]
    lines.append(
        f"24 unconditional samples: guided pass as before {cell(u['guided'])} s, one pass now {cell(u['plain'])} s"
    )
    if "sd15_cpu" in report:
        sd = report["sd15_cpu"]
        lines.append(
            "SD 1.5-shaped, random weights, this CPU (median s): "
            + ", ".join(f"{k} {np.median(v):.2f}" for k, v in sd["seconds"].items())
        )
        projected = sd["projected_round_seconds"]
        lines.append(
            "projected SD round on this CPU (s): "
            + ", ".join(f"{k} {v:.0f}" for k, v in projected.items() if k != "assumptions")
            + f" ({projected['assumptions']})"
        )
    return "\n".join(lines)
