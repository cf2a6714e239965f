"""``edpbrl bench judge``: may the form judge judge? Validated before any benchmark relies on it.

1. Clean renders: every one must pass.
2. Graded damage (:mod:`~edpbrl_plugin.models.shapes.damage`: warp, broken strokes, speckle, blur, melt at
   severities 0..1): the mean score must fall with every step of severity, and the pass rate with it.
3. The shipped model's own samples (unconditional, and for random prompts): at least 90% must pass.
4. The attribute encoder on the same damage, to show why the form judge is needed: its confidence in the
   shape it reads barely moves while the shape breaks.
5. The Fréchet distance's floor: two sets of base samples.

Writes ``judge.json`` and the grids a person checks: what passes and fails among base samples, and the
damage ladder (one row per kind and severity, the judge's verdict as a green or red frame).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..imaging import save_grid, to_uint8
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


def framed(images: np.ndarray, passed: np.ndarray) -> np.ndarray:
    """Images ``[B, 32, 32, 3]`` in a 2-pixel frame: green where the judge passes them, red where it fails them."""
    images = to_uint8(images)
    out = np.zeros((len(images), 36, 36, 3), np.uint8)
    out[:] = np.where(np.asarray(passed)[:, None, None, None], [0, 170, 0], [220, 0, 0])
    out[:, 2:34, 2:34] = images
    return out


def run(out: Path, n: int = 128, base_samples: int = 256, seed: int = 0) -> dict:
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


def format_table(report: dict) -> str:
    header = ["damage"] + [f"severity {s:g}" for s in SEVERITIES]
    rows = []
    for kind, data in report["damage"].items():
        rows.append([f"{kind}: score / pass"] + [f"{r['score']:.2f} / {r['pass']:.2f}" for r in data["rows"]])
        rows.append([f"{kind}: encoder shape conf."] + [f"{r['encoder_shape_confidence']:.2f}" for r in data["rows"]])
    table = markdown_table(header, rows)
    return (
        table
        + f"\n\nclean renders pass {report['clean_pass']:.3f}; base samples pass {report['base_unconditional_pass']:.3f} "
        f"(unconditional), {report['base_prompted_pass']:.3f} (random prompts); Fréchet floor (two base halves) "
        f"{report['fidelity_floor']:.3f}"
    )
