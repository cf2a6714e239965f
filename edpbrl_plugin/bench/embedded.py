"""``edpbrl bench embedded``: is the shipped generator good enough to personalize, and can the encoder judge it?

1. The encoder's held-out accuracy per attribute on freshly rendered images (it must reach 97% on
   every attribute before it judges anything).
2. Prompt adherence: ``n_samples`` images over random prompts (each attribute named with probability
   0.75); for each named attribute, how often the sample carries it (encoder; hue and background
   also measured from pixels). Per background value too: every one must be reachable.
3. Sampling time (16 images at the default settings, guidance included).
4. Per-word features: the mean encoder features of images generated from each single word, which
   the prompt-design benchmark uses on the real generator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..imaging import save_grid, to_uint8
from ..models.shapes import EmbeddedEncoder
from ..models.shapes.pipeline import DEFAULT_GUIDANCE, DEFAULT_STEPS
from ..models.shapes.shapes import ATTRIBUTES, measure_background, measure_hue, render_batch
from ..models.shapes.train import sample_grid_prompts
from ..models.shapes.weights import load_pipeline
from ..simulate.evaluation import JUDGED, random_prompts
from ..tuning.sampling import sample_images
from .common import environment, markdown_table, timed, write_json

TARGETS = {"hue": 0.90, "fill": 0.90, "background": 0.90, "shape": 0.80}
ENCODER_BAR = 0.97


def encoder_accuracy(encoder: EmbeddedEncoder, n: int = 4000, seed: int = 424242) -> dict[str, float]:
    images, labels = render_batch(n, seed)
    predicted = encoder.predict_attributes(images)
    return {name: float((predicted[name] == labels[name]).mean()) for name in ATTRIBUTES}


def adherence(pipe, encoder: EmbeddedEncoder, n_samples: int, seed: int) -> tuple[dict, np.ndarray, list[str]]:
    prompts, wanted = random_prompts(n_samples, seed)
    images = sample_images(pipe, prompts, range(seed, seed + len(prompts)))
    predicted = encoder.predict_attributes(images)
    pixels = {"hue": measure_hue(to_uint8(images)), "background": measure_background(to_uint8(images))}
    results = {}
    for name in JUDGED:
        rows = [i for i, w in enumerate(wanted) if name in w]
        target = np.array([wanted[i][name] for i in rows])
        hit = predicted[name][rows] == target
        entry = {"n": len(rows), "rate": float(hit.mean()), "target": TARGETS[name]}
        if name in pixels:
            entry["rate_pixels"] = float((pixels[name][rows] == target).mean())
        entry["per_value"] = {
            value: float(hit[target == i].mean()) if (target == i).any() else None
            for i, value in enumerate(ATTRIBUTES[name])
        }
        results[name] = entry
    return results, images, prompts


def word_features(pipe, encoder: EmbeddedEncoder, per_word: int = 16, seed: int = 7) -> dict:
    """Mean feature of images generated from each single attribute word (and from the empty prompt)."""
    table = {}
    for words in ATTRIBUTES.values():
        for word in words:
            table[word] = (
                encoder.encode(sample_images(pipe, [word] * per_word, range(seed, seed + per_word)))
                .mean(axis=0)
                .round(5)
                .tolist()
            )
    table[""] = (
        encoder.encode(sample_images(pipe, [""] * per_word, range(seed, seed + per_word)))
        .mean(axis=0)
        .round(5)
        .tolist()
    )
    return table


def run(out: Path, n_samples: int = 256, seed: int = 0) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    encoder = EmbeddedEncoder()
    accuracy = encoder_accuracy(encoder)
    print("encoder held-out accuracy:", {k: round(v, 4) for k, v in accuracy.items()})
    report = {
        "benchmark": "embedded",
        "seed": seed,
        "n_samples": n_samples,
        "environment": environment(),
        "encoder_accuracy": accuracy,
        "encoder_bar": ENCODER_BAR,
    }
    if min(accuracy.values()) < ENCODER_BAR:
        report["verdict"] = "encoder below the bar: it may not judge generated images"
        write_json(out / "embedded.json", report)
        print(report["verdict"])
        return report
    pipe = load_pipeline()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    prompts16 = sample_grid_prompts()[:16]
    seconds = timed(lambda: pipe(prompt=prompts16, generator=torch.Generator().manual_seed(0), output_type="np"), 5)
    report["sampling"] = {
        "images": 16,
        "steps": DEFAULT_STEPS,
        "guidance": DEFAULT_GUIDANCE,
        "seconds_median": float(np.median(seconds)),
        "ms_per_image": float(np.median(seconds) / 16 * 1000),
    }
    print(f"sampling: {report['sampling']['seconds_median']:.2f} s for 16 images")
    results, images, prompts = adherence(pipe, encoder, n_samples, seed)
    report["adherence"] = results
    report["meets_targets"] = {name: results[name]["rate"] >= TARGETS[name] for name in JUDGED}
    report["every_background_reachable"] = all(
        v is not None and v > 0.5 for v in results["background"]["per_value"].values()
    )
    grid_prompts = sample_grid_prompts()
    grid_images = sample_images(pipe, grid_prompts, range(seed, seed + len(grid_prompts)))
    save_grid(grid_images, out / "embedded_samples.png", columns=8)
    save_grid(images[:64], out / "embedded_random_prompts.png", columns=8)
    report["sample_grid"] = "embedded_samples.png (rows: background white/white/black/black/grey/grey/navy/navy; "
    report["sample_grid"] += "columns: red orange yellow green cyan blue purple pink; filled/outline alternate by row)"
    report["word_features"] = word_features(pipe, encoder)
    write_json(out / "embedded.json", report)
    print(format_table(report))
    return report


def format_table(report: dict) -> str:
    rows = []
    for name in JUDGED:
        r = report["adherence"][name]
        pixels = f"{r['rate_pixels']:.3f}" if "rate_pixels" in r else "-"
        rows.append(
            [
                name,
                f"{report['encoder_accuracy'][name]:.4f}",
                r["n"],
                f"{r['rate']:.3f}",
                pixels,
                f"≥ {r['target']:.2f}",
                "yes" if r["rate"] >= r["target"] else "no",
            ]
        )
    table = markdown_table(
        ["attribute", "encoder held-out acc.", "prompted", "present (encoder)", "present (pixels)", "target", "met"],
        rows,
    )
    backgrounds = ", ".join(f"{k} {v:.2f}" for k, v in report["adherence"]["background"]["per_value"].items())
    return (
        table
        + f"\n\nbackground reached when prompted: {backgrounds}\nsampling: {report['sampling']['seconds_median']:.2f} s per 16 images"
    )
