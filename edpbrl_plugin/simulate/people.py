"""Simulated people who look at styled-shapes images: an attribute taste, judged from pixels, answering
through a B-Pref :class:`~edpbrl_plugin.simulate.teachers.Teacher`, the same path a person's answers take.
For evaluation and benchmarks only: the loop never sees a taste or a judge."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..models.shapes.judge import AttributeJudge, AttributeTaste
from .teachers import Teacher


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
        """Choose among the options (``[K, H, W, 3]``): an index, "tie", "skip" or "both_bad" (every option
        broken) per the teacher. A broken option is never chosen."""
        return self.teacher.choose(self.utility(images), self.rng)

    def rate(self, images) -> list[str]:
        """Like / dislike each image: liked when it is preferred (utility above the midpoint)."""
        labels = self.judge(images)
        utility = self.taste.utility(labels)
        threshold = self.taste.weight * (len(self.taste.likes) - 0.5) if self.taste.likes else -self.taste.weight / 2
        return [self.teacher.rate(u, threshold, self.rng) for u in utility]

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


def make_user(name: str, seed: int = 0, judge: AttributeJudge | None = None) -> ImageUser:
    if name not in USER_PRESETS:
        raise ValueError(f"unknown simulated user {name!r}; choose one of {sorted(USER_PRESETS)}")
    taste, teacher = USER_PRESETS[name]
    return ImageUser(taste, teacher, judge, seed)
