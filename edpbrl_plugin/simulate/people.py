"""Simulated people who look at images: an attribute taste on styled shapes, or a class taste on digits /
fashion (PAPA's classifier user), judged from pixels, answering through a B-Pref
:class:`~edpbrl_plugin.simulate.teachers.Teacher`, the same path a person's answers take.
For evaluation and benchmarks only: the loop never sees a taste or a judge."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..models.digits.judge import ClassJudge, ClassTaste
from ..models.shapes.judge import AttributeJudge, AttributeTaste
from .teachers import Teacher


@dataclass
class ImageUser:
    """A simulated person: a taste, a teacher and a judge. Answers pairs, K-sets and like/dislike."""

    taste: AttributeTaste | ClassTaste
    teacher: Teacher = field(default_factory=lambda: Teacher(beta=2.0))
    judge: AttributeJudge | ClassJudge | None = None
    seed: int = 0

    def __post_init__(self):
        if self.judge is None:
            self.judge = ClassJudge(self.taste.dataset) if isinstance(self.taste, ClassTaste) else AttributeJudge()
        self.rng = np.random.default_rng(self.seed)

    @property
    def model(self) -> str:
        """The embedded model whose images this person judges: "shapes", "digits" or "fashion"."""
        return self.taste.dataset if isinstance(self.taste, ClassTaste) else "shapes"

    def utility(self, images) -> np.ndarray:
        return self.taste.utility(self.judge(images))

    def answer(self, images) -> int | str:
        """Choose among the options (``[K, H, W, 3]``): an index, "tie", "skip" or "both_bad" (every option
        broken) per the teacher. A broken option is never chosen."""
        return self.teacher.choose(self.utility(images), self.rng)

    def rate(self, images) -> list[str]:
        """Like / dislike each image: liked when it is preferred (utility above the midpoint)."""
        utility = self.taste.utility(self.judge(images))
        return [self.teacher.rate(u, self.taste.threshold, self.rng) for u in utility]

    def share_preferred(self, images) -> float:
        return float(self.taste.preferred(self.judge(images)).mean())


#: Named users for the demo and benchmarks (``edpbrl demo --user blue-outline``). The careful users
#: answer "tie" when two options are equally good to them (B-Pref's "equal" teacher, |Δu| < 0.5);
#: the noisy (β = 0.5), mistake-prone (20% flipped) and decisive (β = 8, a rationality the learner is
#: not told) teachers never tie; the hurried one skips a fifth of the questions. Every one of them
#: dislikes broken images. The rare tastes are at most 3% of the base model's samples.
_CAREFUL = Teacher(beta=2.0, equal=0.5)
USER_PRESETS: dict[str, tuple[AttributeTaste, Teacher]] = {
    "blue": (AttributeTaste(likes=("blue",)), _CAREFUL),
    "blue-outline": (AttributeTaste(likes=("blue", "outline")), _CAREFUL),
    "star-not-black": (AttributeTaste(likes=("star",), dislikes=("black",)), _CAREFUL),
    "not-red": (AttributeTaste(dislikes=("red",)), _CAREFUL),
    "red-circle": (AttributeTaste(likes=("red", "circle")), _CAREFUL),
    "noisy-blue": (AttributeTaste(likes=("blue",)), Teacher(beta=0.5)),
    "mistaken-blue": (AttributeTaste(likes=("blue",)), Teacher(beta=2.0, mistake=0.2)),
    "hurried-blue": (AttributeTaste(likes=("blue",)), Teacher(beta=2.0, equal=0.5, skip_rate=0.2)),
    "decisive-blue": (AttributeTaste(likes=("blue",)), Teacher(beta=8.0)),
    "yellow-star": (AttributeTaste(likes=("yellow", "star")), _CAREFUL),
    "pink-square": (AttributeTaste(likes=("pink", "square")), _CAREFUL),
    "green-outline-triangle": (AttributeTaste(likes=("green", "outline", "triangle")), _CAREFUL),
}


#: PAPA's users on the real-data models (its ``config/default_papa.yaml`` and ``fashion_mnist_epapa.yaml``): a
#: classifier that likes these classes, answers like / dislike exactly, and ties a pair whose two images are
#: equally liked.
CLASS_USER_PRESETS: dict[str, tuple[ClassTaste, Teacher]] = {
    "papa-digits": (ClassTaste("digits", (1, 4, 7, 9)), Teacher(beta=float("inf"), equal=0.5)),
    "papa-fashion": (ClassTaste("fashion", (5, 7, 9)), Teacher(beta=float("inf"), equal=0.5)),
}


def make_user(name: str, seed: int = 0, judge: AttributeJudge | ClassJudge | None = None) -> ImageUser:
    presets = {**USER_PRESETS, **CLASS_USER_PRESETS}
    if name not in presets:
        raise ValueError(f"unknown simulated user {name!r}; choose one of {sorted(presets)}")
    taste, teacher = presets[name]
    return ImageUser(taste, teacher, judge, seed)
