"""Simulated users: a hidden taste plus a B-Pref teacher that turns utilities into answers.

A user is a function of what it sees (features of the shown options), never of generator internals,
so a simulated user and a person answer through the same path. Teachers follow B-Pref: oracle
(β = ∞), noisy (MNL with rationality β), mistake (flip with probability ε), skip (when every option
is bad), equal (tie when |Δu| < δ) and myopic (later prompt slots weigh more). An option whose utility is
−inf (a broken image) is never chosen or liked, by any teacher, noisy or mistaken: a question whose options
are all broken is answered "both bad".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..learning.answers import BOTH_BAD, DISLIKE, LIKE, SKIP, TIE


@dataclass(frozen=True)
class Teacher:
    """How utilities become answers.

    Args:
        beta: rationality; ``inf`` is the oracle (always the best option).
        mistake: ε, probability of answering the opposite / a random other option.
        skip_below: skip when every option's utility is below this (``None``: never skip).
        equal: δ, answer "tie" on pairs whose utilities differ by less than δ.
        myopic: γ in (0, 1]; slot h of H weighs γ^(H−1−h) (needs per-slot features).
        skip_rate: probability of answering "skip" to a question whatever its options (a hurried person).
    """

    beta: float = 1.0
    mistake: float = 0.0
    skip_below: float | None = None
    equal: float = 0.0
    myopic: float = 1.0
    skip_rate: float = 0.0

    def __post_init__(self):
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0 (use float('inf') for an oracle), got {self.beta}")
        if not 0 <= self.mistake <= 1:
            raise ValueError(f"mistake must be a probability in [0, 1], got {self.mistake}")
        if not 0 <= self.skip_rate < 1:
            raise ValueError(f"skip_rate must be a probability in [0, 1), got {self.skip_rate}")
        if self.equal < 0 or not 0 < self.myopic <= 1:
            raise ValueError("equal must be >= 0 and myopic in (0, 1]")

    def choose(self, utilities: np.ndarray, rng: np.random.Generator) -> int | str:
        """Answer a K-way question from the options' utilities ``[K]``."""
        u = np.asarray(utilities, dtype=np.float64)
        usable = u > -np.inf
        if self.skip_rate and rng.random() < self.skip_rate:
            return SKIP
        if not usable.any():
            return BOTH_BAD
        if self.skip_below is not None and u.max() < self.skip_below:
            return SKIP
        if len(u) == 2 and abs(u[0] - u[1]) < self.equal:
            return TIE
        if np.isinf(self.beta):
            best = np.flatnonzero(u == u.max())
            choice = int(rng.choice(best))
        else:
            p = np.exp(self.beta * (u - u.max()))
            choice = int(rng.choice(len(u), p=p / p.sum()))
        others = np.flatnonzero(usable & (np.arange(len(u)) != choice))
        if self.mistake and len(others) and rng.random() < self.mistake:
            choice = int(rng.choice(others))
        return choice

    def rate(self, utility: float, threshold: float, rng: np.random.Generator) -> str:
        """Like / dislike one option: P(like) = σ(β (u − threshold)), flipped with probability ε."""
        if utility == -np.inf:
            return DISLIKE
        if np.isinf(self.beta):
            like = utility > threshold
        else:
            like = rng.random() < 1.0 / (1.0 + np.exp(-self.beta * (utility - threshold)))
        if self.mistake and rng.random() < self.mistake:
            like = not like
        return LIKE if like else DISLIKE


class LinearUser:
    """Utility u(x) = θ*ᵀφ(x) in feature space, answering through a :class:`Teacher`.

    ``like_threshold`` is the utility above which the user likes a single image.
    """

    def __init__(self, theta_star, teacher: Teacher | None = None, like_threshold: float = 0.0, seed=None):
        self.theta_star = np.asarray(theta_star, dtype=np.float64)
        if self.theta_star.ndim != 1 or not np.isfinite(self.theta_star).all():
            raise ValueError("theta_star must be a finite 1-D vector")
        self.teacher = teacher or Teacher()
        self.like_threshold = like_threshold
        self.rng = np.random.default_rng(seed)

    def utility(self, features) -> np.ndarray:
        """True utility per option; features ``[K, d]``, or per-slot ``[K, H, d]`` (myopic weighting)."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim == 3:
            n_slots = features.shape[1]
            weights = self.teacher.myopic ** np.arange(n_slots - 1, -1, -1)
            return np.einsum("khd,h,d->k", features, weights, self.theta_star)
        return features @ self.theta_star

    def answer(self, features) -> int | str:
        """Answer the question whose options have these features."""
        return self.teacher.choose(self.utility(features), self.rng)

    def rate(self, features) -> str:
        """Like or dislike one option (features ``[d]``)."""
        return self.teacher.rate(float(self.utility(np.asarray(features)[None])[0]), self.like_threshold, self.rng)


def attribute_layout(attributes: Mapping[str, tuple[str, ...] | list[str]]) -> list[tuple[str, str]]:
    """(attribute, value) per feature column of a concatenated one-hot / posterior attribute vector."""
    return [(name, value) for name, values in attributes.items() for value in values]


def attribute_theta(
    attributes: Mapping[str, tuple[str, ...] | list[str]],
    likes: Mapping[str, float] | None = None,
    dislikes: Mapping[str, float] | None = None,
) -> np.ndarray:
    """θ* over attribute columns from rules: ``likes={"blue": 2.0}``, ``dislikes={"black": 1.0}``.

    Keys are attribute values ("blue") or "attribute=value" when a value name is ambiguous.
    """
    layout = attribute_layout(attributes)
    theta = np.zeros(len(layout))
    for sign, rules in ((1.0, likes or {}), (-1.0, dislikes or {})):
        for key, weight in rules.items():
            hits = [i for i, (name, value) in enumerate(layout) if key in (value, f"{name}={value}")]
            if len(hits) != 1:
                known = ", ".join(value for _, value in layout)
                raise ValueError(f"rule {key!r} matches {len(hits)} attribute values; known values: {known}")
            theta[hits[0]] += sign * float(weight)
    return theta
