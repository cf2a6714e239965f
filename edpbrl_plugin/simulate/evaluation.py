"""How a simulated person sees a tuned styled-shapes model next to the base model (evaluation only).

The target of personalization is the base model tilted toward the person's taste: their taste where the
prompt is silent, and everything they did not ask to change kept as the base has it. So a tuned model is
measured on fixed seeds against the base model on the same seeds:

* ``share``: the fraction of unconditional samples that are well formed and carry the taste;
* ``well_formed``: the fraction of samples the form judge passes (unconditional and prompted);
* ``win_rate``: per seed, does the person prefer the tuned sample to the base sample (ties count half);
* ``adherence``: per attribute named in a random prompt, the fraction of prompted samples that carry it;
* ``variety``: per attribute the taste does not mention, the total-variation distance between the tuned
  model's distribution of its values and that of the base model's preferred samples;
* ``fidelity``: the Fréchet distance, on the attribute encoder's embedding, between tuned samples and the
  base model's preferred samples, beside its floor: the same distance between two sets of base samples.

On the real-data models (digits, fashion: a class taste, no prompts) the judge is the classifier with the form
judge beside it (:class:`~edpbrl_plugin.models.digits.judge.ClassJudge`), fidelity uses
its embedding, ``variety`` is the distance between the liked classes' mix among the tuned model's preferred
samples and among the base's, ``liked_class_min`` is the rarest liked class's fraction of the tuned model's
preferred samples (do all liked digits survive?), and ``share_as_papa_counts`` is PAPA's own measure: the fraction
of samples whose most likely class is liked, read or not, well formed or not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg

from ..models.digits.judge import ClassJudge, ClassTaste
from ..models.shapes import EmbeddedEncoder
from ..models.shapes.judge import WELL_FORMED, AttributeJudge, AttributeTaste
from ..models.shapes.shapes import ATTRIBUTES
from ..tuning.pools import cached_pool, pool_key
from ..tuning.sampling import sample_images

JUDGED = ("shape", "hue", "fill", "background")
REFERENCE_SEED = 900_000
PROMPT_SEED = 700_000


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to embeddings ``a [n, d]`` and ``b [m, d]`` (FID's formula)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    mean = a.mean(0) - b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    root = root.real if np.iscomplexobj(root) else root
    return float(max(mean @ mean + np.trace(cov_a + cov_b - 2.0 * root), 0.0))


def total_variation(a: np.ndarray, b: np.ndarray, n_values: int) -> float:
    """Total-variation distance between the value histograms of label arrays ``a`` and ``b`` (−1 ignored)."""
    a, b = a[a >= 0], b[b >= 0]
    if not len(a) or not len(b):
        return float("nan")
    p = np.bincount(a, minlength=n_values) / len(a)
    q = np.bincount(b, minlength=n_values) / len(b)
    return float(0.5 * np.abs(p - q).sum())


def random_prompts(n: int, seed: int) -> tuple[list[str], list[dict[str, int]]]:
    """``n`` prompts naming each judged attribute with probability 3/4, and the named values per prompt."""
    rng = np.random.default_rng(seed)
    prompts, wanted = [], []
    for _ in range(n):
        chosen = {name: int(rng.integers(len(ATTRIBUTES[name]))) for name in JUDGED if rng.random() < 0.75}
        words = [ATTRIBUTES[name][i] for name, i in chosen.items()]
        rng.shuffle(words)
        prompts.append(" ".join(words))
        wanted.append(chosen)
    return prompts, wanted


def adherence(labels: dict[str, np.ndarray], wanted: list[dict[str, int]]) -> dict[str, float]:
    """Per judged attribute, the fraction of prompts naming it whose sample carries it."""
    out = {}
    for name in JUDGED:
        rows = [i for i, w in enumerate(wanted) if name in w]
        target = np.array([wanted[i][name] for i in rows])
        out[name] = float((labels[name][rows] == target).mean()) if rows else float("nan")
    return out


@dataclass
class Reference:
    """The base model's side of every comparison, sampled once: ``n`` unconditional reference samples (two
    halves, for the fidelity floor), the paired evaluation samples and the prompted samples."""

    judge: AttributeJudge | ClassJudge
    embedder: EmbeddedEncoder
    labels: dict[str, np.ndarray]
    embeddings: np.ndarray

    @classmethod
    def sample(cls, pipe, judge: AttributeJudge | ClassJudge, n: int = 1024, **sampling) -> Reference:
        key = pool_key(pipe, [""], REFERENCE_SEED, {"n": n, "purpose": "reference", **sampling})
        seeds = range(REFERENCE_SEED, REFERENCE_SEED + n)
        images = cached_pool(key, lambda: sample_images(pipe, [""] * n, seeds, adapters=False))  # the base model
        if isinstance(judge, ClassJudge):
            embedder = judge.encoder  # the classifier's (normalised) embedding
        else:
            embedder = EmbeddedEncoder("embedding", batch_size=judge.encoder.batch_size)
        return cls(judge, embedder, judge(images), embedder.encode(images))

    def preferred(self, taste: AttributeTaste | ClassTaste) -> np.ndarray:
        return taste.preferred(self.labels)


def compare(
    taste: AttributeTaste | ClassTaste,
    tuned: tuple[np.ndarray, dict[str, np.ndarray]],
    base: tuple[np.ndarray, dict[str, np.ndarray]],
    prompted: dict[str, np.ndarray] | None = None,
    wanted: list[dict[str, int]] | None = None,
    reference: Reference | None = None,
) -> dict:
    """The tuned model's numbers for one taste: ``tuned`` and ``base`` are (images, judged labels) on the same
    seeds; ``prompted`` the judged labels of the tuned model's samples for the prompts whose named values
    are ``wanted``; ``reference`` (for variety and fidelity) the base model's reference samples."""
    tuned_images, tuned_labels = tuned
    _, base_labels = base
    u_tuned, u_base = taste.utility(tuned_labels), taste.utility(base_labels)
    wins = np.where(u_tuned > u_base, 1.0, np.where(u_tuned == u_base, 0.5, 0.0))
    formed = tuned_labels[WELL_FORMED]
    result = {
        "share": float(taste.preferred(tuned_labels).mean()),
        "well_formed": float(formed.mean()),
        "win_rate": float(wins.mean()),
    }
    if isinstance(taste, ClassTaste):
        result["share_as_papa_counts"] = float(np.isin(tuned_labels["top_class"], taste.likes).mean())
    if prompted is not None and wanted is not None:
        result["adherence"] = adherence(prompted, wanted)
        result["well_formed_prompted"] = float(prompted[WELL_FORMED].mean())
    if reference is not None:
        preferred = reference.preferred(taste)
        half = len(preferred) // 2
        first, second = np.flatnonzero(preferred[:half]), half + np.flatnonzero(preferred[half:])
        embedding = reference.embedder.encode(tuned_images)
        if isinstance(taste, ClassTaste):
            liked = tuned_labels["class"][taste.preferred(tuned_labels)]
            n_classes = len(reference.judge.encoder.classes)
            result["variety"] = {"liked class": total_variation(liked, reference.labels["class"][preferred], n_classes)}
            counts = np.array([(liked == c).sum() for c in taste.likes])
            result["liked_class_min"] = float(counts.min() / counts.sum()) if counts.sum() else 0.0
        else:
            named = {n for value in taste.likes + taste.dislikes for n, values in ATTRIBUTES.items() if value in values}
            result["variety"] = {
                name: total_variation(
                    tuned_labels[name][formed], reference.labels[name][preferred], len(ATTRIBUTES[name])
                )
                for name in JUDGED
                if name not in named
            }
        result["fidelity"] = frechet_distance(embedding, reference.embeddings[second])
        result["fidelity_floor"] = frechet_distance(
            reference.embeddings[first[: len(embedding)]], reference.embeddings[second]
        )
        result["preferred_reference"] = int(len(second))
    return result
