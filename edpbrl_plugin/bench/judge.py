"""``edpbrl bench judge``: may the form judge judge? Validated before any benchmark relies on it.

On the styled-shapes model (``--model shapes``, the default):

1. Clean renders: every one must pass.
2. Graded damage (:mod:`~edpbrl_plugin.models.shapes.damage`: warp, broken strokes, speckle, blur, melt at
   severities 0..1): the mean score must fall with every step of severity, and the pass rate with it.
3. The shipped model's own samples (unconditional, and for random prompts): at least 90% must pass.
4. The attribute encoder on the same damage, to show why the form judge is needed: its confidence in the
   shape it reads barely moves while the shape breaks.
5. The Fréchet distance's floor: two sets of base samples.

Writes ``judge.json`` and the grids a person checks: what passes and fails among base samples, and the
damage ladder (one row per kind and severity, the judge's verdict as a green or red frame).

On the real-data models (``--model digits|fashion``, :mod:`~edpbrl_plugin.models.digits.form`) the same checks
run on held-out real images in place of clean renders, with :mod:`~edpbrl_plugin.models.digits.damage`'s
kinds, and the classifier's readable rate beside the judge's (the classifier alone is what judged before);
files are ``judge_<model>.json`` and ``judge_<model>_*.png``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..imaging import save_grid, to_uint8
from ..models.digits.damage import DAMAGES as REAL_DAMAGES
from ..models.digits.damage import damaged_images
from ..models.digits.data import load_split, to_rgb
from ..models.digits.form import DigitsFormJudge
from ..models.digits.judge import WELL_FORMED, ClassJudge
from ..models.digits.weights import load_pipeline as load_digits_pipeline
from ..models.shapes import EmbeddedEncoder
from ..models.shapes.damage import DAMAGES, damaged_renders
from ..models.shapes.form import LIMITS, FormJudge
from ..models.shapes.shapes import render_batch
from ..models.shapes.weights import load_pipeline
from ..simulate.evaluation import frechet_distance, random_prompts
from ..tuning.sampling import sample_images
from .common import environment, markdown_table, write_json

SEVERITIES = (0.0, 0.25, 0.5, 0.75, 1.0)
BASE_BAR = 0.90
#: Held-out real images that must pass (the real-data judges; the shapes judge must pass every clean render).
REAL_CLEAN_BAR = 0.97
#: How far a real-data judge's mean score may rise from one severity to the next and still count as falling.
MONOTONE_TOLERANCE = 0.01


def framed(images: np.ndarray, passed: np.ndarray) -> np.ndarray:
    """Images ``[B, H, W, 3]`` in a 2-pixel frame: green where the judge passes them, red where it fails them."""
    images = to_uint8(images)
    size = images.shape[1]
    out = np.zeros((len(images), size + 4, size + 4, 3), np.uint8)
    out[:] = np.where(np.asarray(passed)[:, None, None, None], [0, 170, 0], [220, 0, 0])
    out[:, 2 : size + 2, 2 : size + 2] = images
    return out


def run(out: Path, n: int = 128, base_samples: int = 256, seed: int = 0, model: str = "shapes") -> dict:
    if model != "shapes":
        return run_real(out, model, n=n, base_samples=base_samples, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    judge, encoder = FormJudge(), EmbeddedEncoder()
    clean, _ = render_batch(n, seed + 1)
    clean_report = judge(clean)
    report = {
        "benchmark": "judge",
        "limits": LIMITS,
        "n": n,
        "environment": environment(),
        "clean_pass": float(clean_report.well_formed.mean()),
    }
    print(f"clean renders: {report['clean_pass']:.3f} pass")
    ladder, damage = [], {}
    for kind in DAMAGES:
        rows = []
        for severity in SEVERITIES:
            images = damaged_renders(n, seed + 2, kind, severity)
            verdict = judge(images)
            shape = encoder.attribute_posteriors(images)["shape"].max(axis=1)
            rows.append(
                {
                    "severity": severity,
                    "score": float(verdict.score.mean()),
                    "pass": float(verdict.well_formed.mean()),
                    "encoder_shape_confidence": float(shape.mean()),
                }
            )
            ladder.append(framed(images[:8], verdict.well_formed[:8]))
        scores = [r["score"] for r in rows]
        damage[kind] = {"rows": rows, "monotonic": bool(np.all(np.diff(scores) < 0))}
        print(f"{kind:8} score " + " ".join(f"{s:.2f}" for s in scores) + f"  monotonic: {damage[kind]['monotonic']}")
    report["damage"] = damage
    save_grid(np.concatenate(ladder), out / "judge_damage.png", columns=8, scale=3, pad=0)

    pipe = load_pipeline()
    unconditional = sample_images(pipe, [""] * base_samples, range(seed, seed + base_samples))
    prompts, _ = random_prompts(base_samples, seed)
    prompted = sample_images(pipe, prompts, range(seed, seed + base_samples))
    for name, images in (("unconditional", unconditional), ("prompted", prompted)):
        verdict = judge(images)
        report[f"base_{name}_pass"] = float(verdict.well_formed.mean())
        report[f"base_{name}_defects_over_limit"] = {k: float((v > 1).mean()) for k, v in verdict.defects.items()}
        order = np.argsort(verdict.score)
        save_grid(framed(images[order[:48]], verdict.well_formed[order[:48]]), out / f"judge_base_{name}_worst.png", 12)
        passed = np.flatnonzero(verdict.well_formed)[:48]
        save_grid(framed(images[passed], verdict.well_formed[passed]), out / f"judge_base_{name}_pass.png", 12)
        print(f"base samples ({name}): {report[f'base_{name}_pass']:.3f} pass (bar {BASE_BAR})")
    embed = EmbeddedEncoder("embedding")
    half = base_samples // 2
    report["fidelity_floor"] = frechet_distance(embed.encode(unconditional[:half]), embed.encode(unconditional[half:]))
    report["meets"] = {
        "clean_all_pass": report["clean_pass"] == 1.0,
        "monotonic": all(d["monotonic"] for d in damage.values()),
        "base_unconditional": report["base_unconditional_pass"] >= BASE_BAR,
        "base_prompted": report["base_prompted_pass"] >= BASE_BAR,
    }
    write_json(out / "judge.json", report)
    print(format_table(report))
    return report


def run_real(out: Path, dataset: str, n: int = 128, base_samples: int = 256, seed: int = 0) -> dict:
    """The real-data form judge's validation: held-out images, graded damage, the base model's samples."""
    out.mkdir(parents=True, exist_ok=True)
    judge = DigitsFormJudge(dataset)
    classifier = ClassJudge(dataset, form=judge)
    held_out, _ = load_split(dataset, "test")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(held_out), size=2 * n, replace=False)
    clean, others = held_out[pick[:n]] / 255.0, held_out[pick[n:]] / 255.0
    all_pass = judge(to_rgb(held_out))
    report = {
        "benchmark": "judge",
        "model": dataset,
        "n": n,
        "environment": environment(),
        "clean_pass": float(all_pass.mean()),
        "clean_images": len(held_out),
    }
    print(f"held-out real images: {report['clean_pass']:.3f} of {len(held_out)} pass")
    ladder, damage = [], {}
    for kind in REAL_DAMAGES:
        rows = []
        for severity in SEVERITIES:
            images = to_rgb(damaged_images(clean, kind, severity, seed + 2, others))
            score = judge.score(images)
            passed = score >= judge.threshold
            readable = classifier(images)["readable"]
            rows.append(
                {"severity": severity, "score": float(score.mean()), "pass": float(passed.mean()),
                 "classifier_readable": float(readable.mean())}
            )  # fmt: skip
            ladder.append(framed(images[:8], passed[:8]))
        scores = [r["score"] for r in rows]
        # mild blur is passed by design (the generator is soft), so a flat start counts: never up, lower at the end
        monotonic = bool(np.all(np.diff(scores) <= MONOTONE_TOLERANCE) and scores[-1] < scores[0])
        damage[kind] = {"rows": rows, "monotonic": monotonic}
        print(f"{kind:8} score " + " ".join(f"{s:.2f}" for s in scores) + f"  monotonic: {monotonic}")
    report["damage"] = damage
    save_grid(np.concatenate(ladder), out / f"judge_{dataset}_damage.png", columns=8, scale=3, pad=0)

    images = sample_images(load_digits_pipeline(dataset), [""] * base_samples, range(seed, seed + base_samples))
    passed, labels = judge(images), classifier(images)
    report["base_pass"] = float(passed.mean())
    report["base_classifier_readable"] = float(labels["readable"].mean())
    report["base_well_formed"] = float(labels[WELL_FORMED].mean())
    order = np.argsort(judge.score(images))
    save_grid(framed(images[order[:48]], passed[order[:48]]), out / f"judge_{dataset}_base_worst.png", 12)
    chosen = np.flatnonzero(passed)[:48]
    save_grid(framed(images[chosen], passed[chosen]), out / f"judge_{dataset}_base_pass.png", 12)
    print(
        f"base samples: {report['base_pass']:.3f} pass the form judge (bar {BASE_BAR}), "
        f"{report['base_classifier_readable']:.3f} readable, {report['base_well_formed']:.3f} both (well formed)"
    )
    report["meets"] = {
        "clean_pass": report["clean_pass"] >= REAL_CLEAN_BAR,
        "monotonic": all(d["monotonic"] for d in damage.values()),
        "base": report["base_pass"] >= BASE_BAR,
    }
    write_json(out / f"judge_{dataset}.json", report)
    print(format_real_table(report))
    return report


def ladder_table(report: dict, witness: str, label: str) -> str:
    """The damage ladder as a table: the judge's mean score and pass rate per kind and severity, and beside
    them ``witness`` (what judged before, ``label`` in the table) on the same images."""
    header = ["damage"] + [f"severity {s:g}" for s in SEVERITIES]
    rows = []
    for kind, data in report["damage"].items():
        rows.append([f"{kind}: score / pass"] + [f"{r['score']:.2f} / {r['pass']:.2f}" for r in data["rows"]])
        rows.append([f"{kind}: {label}"] + [f"{r[witness]:.2f}" for r in data["rows"]])
    return markdown_table(header, rows)


def format_real_table(report: dict) -> str:
    return (
        ladder_table(report, "classifier_readable", "classifier readable")
        + f"\n\nheld-out real images pass {report['clean_pass']:.3f} (bar {REAL_CLEAN_BAR}); base samples pass "
        f"{report['base_pass']:.3f} (bar {BASE_BAR}); classifier-readable {report['base_classifier_readable']:.3f}; "
        f"both, the well-formed rate the benchmarks use, {report['base_well_formed']:.3f}"
    )


def format_table(report: dict) -> str:
    return (
        ladder_table(report, "encoder_shape_confidence", "encoder shape conf.")
        + f"\n\nclean renders pass {report['clean_pass']:.3f}; base samples pass {report['base_unconditional_pass']:.3f} "
        f"(unconditional), {report['base_prompted_pass']:.3f} (random prompts); Fréchet floor (two base halves) "
        f"{report['fidelity_floor']:.3f}"
    )
