"""Reading styled-shapes images from pixels, for evaluation and simulated people (never inside the loop).

The judge reads attributes with the embedded encoder (>= 97% accurate on every attribute) and
cross-checks hue and background against direct pixel measurements; an image whose two readings
disagree counts as not having the value. It also says whether each image is well formed (the
procedural :class:`~.form.FormJudge`): the encoder names a melted scribble's attributes as confidently
as a clean render's. A taste likes or dislikes attribute values, and never prefers a broken image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...imaging import to_uint8
from .features import EmbeddedEncoder
from .form import FormJudge
from .shapes import ATTRIBUTES, measure_background, measure_hue

#: The judge's key for "is this image well formed" (absent: every image counts as well formed).
WELL_FORMED = "well_formed"


class AttributeJudge:
    """Attribute labels of images ``[B, H, W, 3]`` in 0..1: ``{name: [B] label index or −1 if uncertain}``,
    plus ``"well_formed"``: ``[B]`` bool."""

    def __init__(self, encoder: EmbeddedEncoder | None = None, form: FormJudge | None = None):
        self.encoder = encoder or EmbeddedEncoder()
        self.form = form or FormJudge()

    def __call__(self, images) -> dict[str, np.ndarray]:
        predicted = self.encoder.predict_attributes(images)
        pixels = to_uint8(np.asarray(images))
        for name, measured in (("hue", measure_hue(pixels)), ("background", measure_background(pixels))):
            predicted[name] = np.where(predicted[name] == measured, predicted[name], -1)
        predicted[WELL_FORMED] = self.form(pixels).well_formed
        return predicted


@dataclass(frozen=True)
class AttributeTaste:
    """Liked and disliked attribute values, e.g. ``likes=("blue", "outline")``, ``dislikes=("black",)``."""

    likes: tuple[str, ...] = ()
    dislikes: tuple[str, ...] = ()
    weight: float = 2.0

    def __post_init__(self):
        for value in self.likes + self.dislikes:
            _locate(value)
        if not self.likes and not self.dislikes:
            raise ValueError("a taste needs at least one liked or disliked value")

    def matches(self, labels: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Per image: how many liked values it has, how many disliked ones."""
        n = len(_well_formed(labels))
        liked, disliked = np.zeros(n, int), np.zeros(n, int)
        for value in self.likes:
            name, index = _locate(value)
            liked += labels[name] == index
        for value in self.dislikes:
            name, index = _locate(value)
            disliked += labels[name] == index
        return liked, disliked

    def utility(self, labels: dict[str, np.ndarray]) -> np.ndarray:
        """``weight * (liked − disliked)`` per image; −inf for a broken image (never preferred)."""
        liked, disliked = self.matches(labels)
        utility = self.weight * (liked - disliked).astype(np.float64)
        return np.where(_well_formed(labels), utility, -np.inf)

    def preferred(self, labels: dict[str, np.ndarray]) -> np.ndarray:
        """Well formed, with every liked value and none of the disliked ones."""
        liked, disliked = self.matches(labels)
        return (liked == len(self.likes)) & (disliked == 0) & _well_formed(labels)

    @property
    def threshold(self) -> float:
        """Utility above which the person likes a single image: every liked value (less half a weight), or, for a
        taste of dislikes only, none of them."""
        return self.weight * (len(self.likes) - 0.5) if self.likes else -self.weight / 2

    @property
    def name(self) -> str:
        return "-".join(list(self.likes) + [f"not-{v}" for v in self.dislikes])


def _well_formed(labels: dict[str, np.ndarray]) -> np.ndarray:
    n = len(next(iter(labels.values())))
    return np.asarray(labels.get(WELL_FORMED, np.ones(n, bool)), dtype=bool)


def _locate(value: str) -> tuple[str, int]:
    for name, values in ATTRIBUTES.items():
        if value in values:
            return name, values.index(value)
    raise ValueError(f"unknown attribute value {value!r}; known: {[v for vs in ATTRIBUTES.values() for v in vs]}")
