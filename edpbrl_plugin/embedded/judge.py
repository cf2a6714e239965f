"""Simulated people who look at styled-shapes images: attribute tastes judged from pixels, not generator internals.

The judge reads attributes with the embedded encoder (>= 97% accurate on every attribute) and
cross-checks hue and background against direct pixel measurements; an image whose two readings
disagree counts as not having the value. Users like or dislike attribute values and answer through a
B-Pref :class:`~edpbrl_plugin.users.Teacher`, the same path a person's answers take.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..features import EmbeddedEncoder
from ..imaging import to_uint8
from ..users import Teacher
from .shapes import ATTRIBUTES, measure_background, measure_hue


class AttributeJudge:
    """Attribute labels of images ``[B, H, W, 3]`` in 0..1: ``{name: [B] label index or −1 if uncertain}``."""

    def __init__(self, encoder: EmbeddedEncoder | None = None):
        self.encoder = encoder or EmbeddedEncoder()

    def __call__(self, images) -> dict[str, np.ndarray]:
        predicted = self.encoder.predict_attributes(images)
        pixels = to_uint8(np.asarray(images))
        for name, measured in (("hue", measure_hue(pixels)), ("background", measure_background(pixels))):
            predicted[name] = np.where(predicted[name] == measured, predicted[name], -1)
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
        n = len(next(iter(labels.values())))
        liked, disliked = np.zeros(n, int), np.zeros(n, int)
        for value in self.likes:
            name, index = _locate(value)
            liked += labels[name] == index
        for value in self.dislikes:
            name, index = _locate(value)
            disliked += labels[name] == index
        return liked, disliked

    def utility(self, labels: dict[str, np.ndarray]) -> np.ndarray:
        liked, disliked = self.matches(labels)
        return self.weight * (liked - disliked).astype(np.float64)

    def preferred(self, labels: dict[str, np.ndarray]) -> np.ndarray:
        """Carries every liked value and none of the disliked ones."""
        liked, disliked = self.matches(labels)
        return (liked == len(self.likes)) & (disliked == 0)

    @property
    def name(self) -> str:
        return "-".join(list(self.likes) + [f"not-{v}" for v in self.dislikes])


def _locate(value: str) -> tuple[str, int]:
    for name, values in ATTRIBUTES.items():
        if value in values:
            return name, values.index(value)
    raise ValueError(f"unknown attribute value {value!r}; known: {[v for vs in ATTRIBUTES.values() for v in vs]}")


@dataclass
class ImageUser:
    """A simulated person: a taste, a teacher and a judge. Answers pairs, K-sets and like/dislike."""

    taste: AttributeTaste
    teacher: Teacher = field(default_factory=lambda: Teacher(beta=2.0))
    judge: AttributeJudge | None = None
    seed: int = 0

    def __post_init__(self):
        self.judge = self.judge or AttributeJudge()
        self.rng = np.random.default_rng(self.seed)

    def utility(self, images) -> np.ndarray:
        return self.taste.utility(self.judge(images))

    def answer(self, images) -> int | str:
        """Choose among the options (``[K, H, W, 3]``): an index, "tie" or "skip" per the teacher."""
        return self.teacher.choose(self.utility(images), self.rng)

    def rate(self, images) -> list[str]:
        """Like / dislike each image: liked when it is preferred (utility above the midpoint)."""
        labels = self.judge(images)
        utility = self.taste.utility(labels)
        threshold = self.taste.weight * (len(self.taste.likes) - 0.5) if self.taste.likes else -self.taste.weight / 2
        return [self.teacher.rate(u, threshold, self.rng) for u in utility]

    def share_preferred(self, images) -> float:
        return float(self.taste.preferred(self.judge(images)).mean())


#: Named users for the demo and benchmarks (``edpbrl demo --user blue-outline``). The standard users
#: answer "tie" when two options are equally good to them (B-Pref's "equal" teacher, |Δu| < 0.5);
#: the noisy (β = 0.5) and mistake-prone (20% flipped) teachers never tie.
_CAREFUL = Teacher(beta=2.0, equal=0.5)
USER_PRESETS: dict[str, tuple[AttributeTaste, Teacher]] = {
    "blue": (AttributeTaste(likes=("blue",)), _CAREFUL),
    "blue-outline": (AttributeTaste(likes=("blue", "outline")), _CAREFUL),
    "star-not-black": (AttributeTaste(likes=("star",), dislikes=("black",)), _CAREFUL),
    "red-circle": (AttributeTaste(likes=("red", "circle")), _CAREFUL),
    "noisy-blue": (AttributeTaste(likes=("blue",)), Teacher(beta=0.5)),
    "mistaken-blue": (AttributeTaste(likes=("blue",)), Teacher(beta=2.0, mistake=0.2)),
}


def make_user(name: str, seed: int = 0, judge: AttributeJudge | None = None) -> ImageUser:
    if name not in USER_PRESETS:
        raise ValueError(f"unknown simulated user {name!r}; choose one of {sorted(USER_PRESETS)}")
    taste, teacher = USER_PRESETS[name]
    return ImageUser(taste, teacher, judge, seed)
