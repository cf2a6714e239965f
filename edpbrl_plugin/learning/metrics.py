"""How well a learned reward matches a user, and when to stop asking."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from .choice import ChoiceModel


def cosine_error(theta_hat: np.ndarray, theta_star: np.ndarray) -> float:
    """1 − cos(θ̂, θ*); 1.0 while θ̂ is still zero."""
    norm = np.linalg.norm(theta_hat) * np.linalg.norm(theta_star)
    return 1.0 if norm == 0 else float(1.0 - theta_hat @ theta_star / norm)


def choice_accuracy(estimated: np.ndarray, true: np.ndarray) -> float:
    """Fraction of held-out questions where the estimate's best option is one of the user's best options.

    ``estimated`` and ``true`` are scores ``[n, K]`` of each question's options (θ̂ᵀφ and the user's utility; K = 2
    is pairwise accuracy). A question on which the estimate ties every option scores chance, 1/K; questions
    whose options are all equally good to the user are left out (there is nothing to get right).
    """
    estimated, true = np.asarray(estimated, dtype=np.float64), np.asarray(true, dtype=np.float64)
    hits = np.take_along_axis(true, estimated.argmax(axis=1)[:, None], axis=1)[:, 0] == true.max(axis=1)
    tied = np.isclose(estimated.max(axis=1), estimated.min(axis=1))
    informative = ~np.isclose(true.max(axis=1), true.min(axis=1))
    scores = np.where(tied, 1.0 / true.shape[1], hits)[informative]
    return float(scores.mean()) if len(scores) else float("nan")


@dataclass(frozen=True)
class StopSignal:
    """Posterior summary for "you can stop now".

    expected_accuracy: mean posterior probability that θ̂ orders a random pool pair correctly.
    max_pair_std: the largest posterior standard deviation of a pool pair's reward difference.
    """

    expected_accuracy: float
    max_pair_std: float

    def should_stop(self, target_accuracy: float = 0.9) -> bool:
        return self.expected_accuracy >= target_accuracy


def stop_signal(model: ChoiceModel, features: np.ndarray, max_pairs: int = 20000, rng=0) -> StopSignal:
    """Stop signal over pairs of pool candidates (all pairs, or ``max_pairs`` random ones)."""
    rewards = model.reward(features)
    n = len(rewards)
    if n < 2:
        raise ValueError("features needs at least 2 candidates for a stop signal")
    i, j = np.triu_indices(n, 1)
    if len(i) > max_pairs:
        pick = np.random.default_rng(rng).choice(len(i), max_pairs, replace=False)
        i, j = i[pick], j[pick]
    z = features[i] - features[j]
    std = np.sqrt(np.maximum(np.einsum("nd,de,ne->n", z, model.covariance_, z), 1e-300))
    confidence = ndtr(np.abs(rewards[i] - rewards[j]) / std)
    return StopSignal(float(confidence.mean()), float(std.max()))
