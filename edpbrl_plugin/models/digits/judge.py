"""Reading digits / fashion images with the classifier, for evaluation and simulated people (never inside the
loop), as PAPA's classifier plays its user.

The judge labels each image with its class, or −1 when the classifier is unsure (top probability below
``confidence``): a blob no one reads as a digit is not a liked digit. An image is well formed when it is readable
and the form judge (:mod:`.form`) passes it: the classifier alone reads a boot merged with a bag as a confident
boot. A simulated person never prefers an image that is not well formed, and it never counts toward a share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import CLASS_NAMES
from .features import DigitsEncoder
from .form import DigitsFormJudge

#: The judge's key for "is this image well formed" (the same key as the shapes judge's).
WELL_FORMED = "well_formed"


class ClassJudge:
    """Of images ``[B, H, W, 3]``: ``{"class": [B] class index or −1, "top_class": [B] the most likely class
    (read or not), "confidence": [B], "readable": [B] bool,
    "form": [B] the form judge's score, "well_formed": [B] bool (readable and passed by the form judge)}``."""

    def __init__(
        self,
        dataset: str = "digits",
        confidence: float = 0.5,
        encoder: DigitsEncoder | None = None,
        form: DigitsFormJudge | None = None,
    ):
        if not 0.0 <= confidence < 1.0:
            raise ValueError(f"confidence must be in [0, 1), got {confidence}")
        self.encoder = encoder or DigitsEncoder(dataset)
        self.dataset = self.encoder.dataset
        self.form = form or DigitsFormJudge(self.dataset)
        self.confidence = confidence

    def __call__(self, images) -> dict[str, np.ndarray]:
        posteriors = self.encoder.class_posteriors(images)
        top = posteriors.max(axis=1)
        readable = top >= self.confidence
        form = self.form.score(images)
        return {
            "class": np.where(readable, posteriors.argmax(axis=1), -1),
            "top_class": posteriors.argmax(axis=1),
            "confidence": top,
            "readable": readable,
            "form": form,
            WELL_FORMED: readable & (form >= self.form.threshold),
        }


@dataclass(frozen=True)
class ClassTaste:
    """Liked classes of one dataset, e.g. PAPA's MNIST user ``ClassTaste("digits", (1, 4, 7, 9))``; utility
    ``weight`` for a liked class, 0 for another, −inf for an unreadable image."""

    dataset: str
    likes: tuple[int, ...]
    weight: float = 2.0

    def __post_init__(self):
        n = len(CLASS_NAMES.get(self.dataset, ()))
        if not n:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {sorted(CLASS_NAMES)}")
        if not self.likes or any(not 0 <= c < n for c in self.likes):
            raise ValueError(f"likes must be class indices in 0..{n - 1}, got {self.likes}")

    def utility(self, labels: dict[str, np.ndarray]) -> np.ndarray:
        liked = np.isin(labels["class"], self.likes)
        return np.where(labels[WELL_FORMED], self.weight * liked, -np.inf)

    def preferred(self, labels: dict[str, np.ndarray]) -> np.ndarray:
        """Readable and of a liked class."""
        return np.isin(labels["class"], self.likes) & labels[WELL_FORMED]

    @property
    def threshold(self) -> float:
        """Utility above which the person likes a single image (between a liked class and another)."""
        return self.weight / 2

    @property
    def name(self) -> str:
        return f"{self.dataset}-" + "".join(
            CLASS_NAMES[self.dataset][c][:2] if self.dataset == "fashion" else str(c) for c in self.likes
        )
