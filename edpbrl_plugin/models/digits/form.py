"""Is a digits / fashion image well formed? A small CNN trained to tell real images from damaged ones
(evaluation only, never in the loop).

The classifier alone is blind to much of what tuning breaks: it reads a shoe with a doubled outline, or a boot
merged with a bag, as a confident sneaker. This judge is trained on the dataset's training images (well formed)
against the same images with the damage of :mod:`.damage` at severities 0.4–1 (broken strokes, warps, grain,
drips, doubled outlines, two things merged). Blur is left out of training and both sides are blurred by up to
0.9 pixels: the generator's samples are softer than the data (50 sampling steps), and a judge that fails softness
would fail the base model for what it is. ``edpbrl bench judge --model digits|fashion`` validates it on
held-out images with graded damage and on the base model's samples, and writes the grids a person checks.
"""

from __future__ import annotations

import numpy as np
import torch

from .features import to_gray
from .weights import load_form


class DigitsFormJudge:
    """``score`` ``[B]`` in (0, 1), the judge's probability that each image ``[B, H, W, C]`` is well formed; an
    image passes at ``score >= threshold``."""

    def __init__(self, dataset: str = "digits", threshold: float = 0.5, batch_size: int = 512):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.model = load_form(dataset)
        self.dataset, self.threshold, self.batch_size = dataset, threshold, batch_size

    @torch.no_grad()
    def score(self, images) -> np.ndarray:
        logits = torch.cat([self.model(chunk)[1] for chunk in to_gray(images).split(self.batch_size)])
        return torch.softmax(logits, dim=1)[:, 1].double().numpy()

    def __call__(self, images) -> np.ndarray:
        """``[B]`` bool: well formed."""
        return self.score(images) >= self.threshold
