"""``edpbrl bench digits``: are the real-data models (MNIST ``digits``, Fashion-MNIST ``fashion``) good enough to
personalize, and can their classifiers judge them?

1. The classifier's accuracy on the held-out images (bar: 98% on MNIST, 90% on Fashion-MNIST, as the issue asks).
2. The generator's class histogram (by the classifier) against the held-out data's, per class in points.
3. A classifier-based Fréchet distance (FID's formula on the classifier's 64-d embedding) between generated and
   held-out images, next to the floor: the same distance between two disjoint halves of the real data.
4. The readable rate: the fraction of images the judge reads with confidence (the benchmarks' "well formed"),
   generated beside held-out real images.
5. Sampling time, and a grid of samples to look at.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..imaging import save_grid
from ..models.digits import DigitsEncoder, load_pipeline
from ..models.digits.data import CLASS_NAMES, load_split, to_rgb
from ..models.digits.judge import WELL_FORMED, ClassJudge
from ..models.digits.pipeline import DEFAULT_STEPS
from ..simulate.evaluation import frechet_distance
from ..tuning.sampling import sample_images
from .common import environment, markdown_table, timed, write_json

CLASSIFIER_BAR = {"digits": 0.98, "fashion": 0.90}
HISTOGRAM_BAR_POINTS = 3.0


def run(out: Path, dataset: str = "digits", n_samples: int = 1000, seed: int = 0) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    encoder = DigitsEncoder(dataset)
    test_images, test_labels = load_split(dataset, "test")
    train_images, _ = load_split(dataset, "train")
    test_rgb = to_rgb(test_images)
    accuracy = float((encoder.predict_classes(test_rgb) == test_labels).mean())
    print(f"{dataset} classifier held-out accuracy: {accuracy:.4f} ({len(test_labels)} images)")
    pipe = load_pipeline(dataset)
    samples = sample_images(pipe, [""] * n_samples, range(seed, seed + n_samples))
    seconds = timed(lambda: sample_images(pipe, [""] * 32, range(32)), repeat=3)
    classes = CLASS_NAMES[dataset]
    generated = np.bincount(encoder.predict_classes(samples), minlength=len(classes)) / n_samples
    data = np.bincount(test_labels, minlength=len(classes)) / len(test_labels)
    # the generated histogram is read by the classifier, so also the held-out images' histogram as it reads them
    read = np.bincount(encoder.predict_classes(test_rgb), minlength=len(classes)) / len(test_labels)
    gap = np.abs(generated - data) * 100
    confidence = encoder.class_posteriors(samples).max(axis=1)
    judge = ClassJudge(dataset, encoder=encoder)
    real = encoder.encode(test_rgb)
    half = len(train_images) // 2
    order = np.random.default_rng(seed).permutation(len(train_images))
    floor_a = encoder.encode(to_rgb(train_images[order[: min(half, len(test_rgb))]]))
    floor_b = encoder.encode(to_rgb(train_images[order[half : half + min(half, len(test_rgb))]]))
    report = {
        "benchmark": "digits",
        "dataset": dataset,
        "seed": seed,
        "n_samples": n_samples,
        "environment": environment(),
        "classifier_accuracy": accuracy,
        "classifier_bar": CLASSIFIER_BAR[dataset],
        "class_histogram": {
            c: {"generated": float(g), "data": float(d), "data_as_read": float(r)}
            for c, g, d, r in zip(classes, generated, data, read)
        },
        "largest_histogram_gap_points": float(gap.max()),
        "largest_histogram_gap_points_as_read": float(np.abs(generated - read).max() * 100),
        "histogram_bar_points": HISTOGRAM_BAR_POINTS,
        "classifier_confidence_mean": float(confidence.mean()),
        **{
            f"{key}_{name}": float(labels[key].mean())
            for name, labels in (("generated", judge(samples)), ("held_out", judge(test_rgb)))
            for key in ("readable", WELL_FORMED)
        },
        "frechet_to_held_out": frechet_distance(encoder.encode(samples), real),
        "frechet_floor_real_halves": frechet_distance(floor_a, floor_b),
        "sampling": {"images": 32, "steps": DEFAULT_STEPS, "seconds_median": float(np.median(seconds))},
    }
    save_grid(samples[:64], out / f"digits_{dataset}_samples.png", columns=8)
    save_grid(test_rgb[:64], out / f"digits_{dataset}_real.png", columns=8)
    write_json(out / f"digits_{dataset}.json", report)
    print(format_table(report))
    return report


def format_table(report: dict) -> str:
    classes = list(report["class_histogram"])
    rows = [
        [c, *(f"{report['class_histogram'][c][key]:.3f}" for key in ("data", "data_as_read", "generated"))]
        for c in classes
    ]
    lines = [
        markdown_table(["class", "held-out data", "held-out, as the classifier reads it", "generated"], rows),
        "",
        f"classifier held-out accuracy {report['classifier_accuracy']:.4f} (bar {report['classifier_bar']:.2f}); "
        f"largest histogram gap {report['largest_histogram_gap_points']:.1f} points (bar {HISTOGRAM_BAR_POINTS:.0f}; "
        f"{report['largest_histogram_gap_points_as_read']:.1f} against the held-out images as the classifier reads "
        "them); "
        f"mean classifier confidence on samples {report['classifier_confidence_mean']:.3f}; readable "
        f"{report['readable_generated']:.3f} of samples vs {report['readable_held_out']:.3f} of held-out images; "
        f"well formed (readable and passed by the form judge) {report['well_formed_generated']:.3f} vs "
        f"{report['well_formed_held_out']:.3f}",
        f"Fréchet (classifier embedding) to held-out {report['frechet_to_held_out']:.4f}, "
        f"floor (two real halves) {report['frechet_floor_real_halves']:.4f}; "
        f"sampling {report['sampling']['seconds_median']:.2f} s for 32 images at {report['sampling']['steps']} steps",
    ]
    return "\n".join(lines)
