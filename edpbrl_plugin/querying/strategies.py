"""Query selection strategies: pick the next pair or K-set from a pool of candidate features.

Every strategy is a small object with one job, scoring candidate questions in a batch (BoTorch's
acquisition-function style) over one model interface (:class:`~edpbrl_plugin.choice.ChoiceModel`).
K-sets are built greedily (best pair, then the best addition, ...), never by enumerating C(N, K).
A batch of questions is chosen greedily too, conditioning the posterior on each pending question
with a rank-(K−1) update, so questions can be answered later and in any order.

Every returned :class:`Query` carries the strategy's own ``score`` and the same
``information_gain`` (½ log det(I + V⁻¹ I(Q; θ̂)), nats) so strategies can be compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.special import expit, softmax

from ..learning._validation import check_features, check_query_size
from ..learning.choice import ChoiceModel
from . import fisher

DEFAULT_STRATEGY = "d_optimal"


@dataclass(frozen=True)
class Query:
    """A question: candidate ``indices`` into the pool, the strategy's ``score`` and the information gain."""

    indices: tuple[int, ...]
    score: float
    information_gain: float
    strategy: str


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-300, None))).sum(axis=axis)


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return -(p * np.log(p) + (1 - p) * np.log1p(-p))


class PoolContext:
    """A pool's features and the model's posterior, with the derived matrices computed once and updated per pick."""

    def __init__(self, features, model: ChoiceModel | None, rng: np.random.Generator, n_samples: int = 64):
        self.features = check_features(features, min_rows=2)
        if model is None:
            model = ChoiceModel().fit(self.features, [])
        elif not hasattr(model, "theta_"):
            raise ValueError("model is not fitted; call model.fit(features, answers) first (answers may be [])")
        if len(model.theta_) != self.features.shape[1]:
            raise ValueError(
                f"features have {self.features.shape[1]} dimensions but the model was fitted on {len(model.theta_)}"
            )
        self.model = model
        self.rng = rng
        self.n_samples = n_samples
        self.covariance = model.covariance_
        self.rewards = self.features @ model.theta_
        self.n = len(self.features)
        self.excluded: set[tuple[int, ...]] = set()
        self._gram2: np.ndarray | None = None

    @cached_property
    def gram(self) -> np.ndarray:
        gram, _ = fisher.gram_matrices(self.features, self.covariance, second=False)
        return gram

    @property
    def gram2(self) -> np.ndarray:
        if self._gram2 is None:
            self._gram2 = fisher.gram_matrices(self.features, self.covariance, second=True)[1]
        return self._gram2

    @cached_property
    def reward_samples(self) -> np.ndarray:
        """Posterior reward draws ``[S, N]``."""
        chol = np.linalg.cholesky(self.covariance + 1e-12 * np.eye(len(self.covariance)))
        thetas = self.model.theta_ + self.rng.standard_normal((self.n_samples, len(self.covariance))) @ chol.T
        return thetas @ self.features.T

    def pair_weights(self, theta_aware: bool) -> np.ndarray | float:
        if theta_aware:
            return self.model.pair_weight(self.rewards[:, None] - self.rewards[None, :])
        return float(self.model.pair_weight(0.0))

    def set_weights(self, sets: np.ndarray, theta_aware: bool) -> np.ndarray:
        """K×K Fisher weights for query stacks ``[M, K]``: the pair model for K = 2, MNL otherwise."""
        if sets.shape[1] == 2:
            delta = self.rewards[sets[:, 0]] - self.rewards[sets[:, 1]]
            return fisher.pair_weight_matrix(self.model.pair_weight(delta if theta_aware else 0.0 * delta))
        if theta_aware:
            return self.model.set_weight(softmax(self.rewards[sets], axis=1))
        return self.model.set_weight(np.full(sets.shape, 1.0 / sets.shape[1]))

    def information_gain(self, query: tuple[int, ...]) -> float:
        sets = np.asarray([query])
        return float(0.5 * fisher.set_d_gain(fisher.submatrix(self.gram, sets), self.set_weights(sets, True))[0])

    def condition_on(self, query: tuple[int, ...]) -> None:
        """Treat ``query`` as asked: shrink the posterior by its expected Fisher and exclude it."""
        sets = np.asarray([query])
        weight = self.set_weights(sets, theta_aware=True)[0]
        self.covariance, gram, self._gram2 = fisher.condition_on_query(
            self.covariance, self.gram, self._gram2, self.features, np.asarray(query), weight
        )
        self.__dict__["gram"] = gram
        self.__dict__.pop("reward_samples", None)
        self.excluded.add(tuple(sorted(query)))


class Strategy:
    """Base: greedy pair-then-extend selection over ``score_pairs`` / ``score_sets``."""

    name = "strategy"

    def score_pairs(self, ctx: PoolContext) -> np.ndarray:
        """Scores of every pair ``[N, N]`` (only i < j is read)."""
        i, j = np.triu_indices(ctx.n, 1)
        scores = np.full((ctx.n, ctx.n), -np.inf)
        scores[i, j] = self.score_sets(ctx, np.stack([i, j], axis=1))
        return scores

    def score_sets(self, ctx: PoolContext, sets: np.ndarray) -> np.ndarray:
        """Scores of query stacks ``[M, K]`` -> ``[M]``."""
        raise NotImplementedError

    def select(self, features, model: ChoiceModel | None = None, k: int = 2, rng=None) -> Query:
        """The next question: ``k`` distinct candidate indices into ``features`` ``[N, d]``."""
        return self.select_batch(features, model, batch=1, k=k, rng=rng)[0]

    def select_batch(self, features, model: ChoiceModel | None = None, batch: int = 1, k: int = 2, rng=None):
        """``batch`` questions chosen greedily, each conditioned on the ones before it (answer in any order)."""
        ctx = PoolContext(features, model, np.random.default_rng(rng))
        check_query_size(k, ctx.n)
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
        queries = []
        for position in range(batch):
            indices, score = self._pick(ctx, k)
            queries.append(Query(indices, float(score), ctx.information_gain(indices), self.name))
            if position + 1 < batch:
                ctx.condition_on(indices)
        return queries

    def _pick(self, ctx: PoolContext, k: int) -> tuple[tuple[int, ...], float]:
        upper = np.arange(ctx.n)[:, None] < np.arange(ctx.n)[None, :]
        scores = np.where(upper, self.score_pairs(ctx), -np.inf)
        for q in ctx.excluded:
            if len(q) == 2:
                scores[q] = -np.inf
        best = np.flatnonzero(scores == scores.max())
        flat = best[ctx.rng.integers(len(best))] if len(best) > 1 else int(scores.argmax())
        query = list(np.unravel_index(flat, scores.shape))
        score = scores.flat[flat]
        while len(query) < k:
            rest = np.setdiff1d(np.arange(ctx.n), query)
            sets = np.column_stack([np.tile(query, (len(rest), 1)), rest])
            set_scores = self.score_sets(ctx, sets)
            if any(len(q) == len(query) + 1 for q in ctx.excluded):
                set_scores[[tuple(sorted(s)) in ctx.excluded for s in sets.tolist()]] = -np.inf
            choice = int(set_scores.argmax())
            query.append(int(rest[choice]))
            score = set_scores[choice]
        return tuple(int(i) for i in query), score


class RandomStrategy(Strategy):
    """Uniformly random questions: the baseline every other strategy must beat."""

    name = "random"

    def score_pairs(self, ctx):
        return ctx.rng.random((ctx.n, ctx.n))

    def score_sets(self, ctx, sets):
        return ctx.rng.random(len(sets))


class UncertaintyStrategy(Strategy):
    """The question whose answer the current estimate is least sure of (entropy of the predicted choice)."""

    name = "uncertainty"

    def score_pairs(self, ctx):
        return _binary_entropy(expit(ctx.rewards[:, None] - ctx.rewards[None, :]))

    def score_sets(self, ctx, sets):
        return _entropy(softmax(ctx.rewards[sets], axis=1))


class BaldStrategy(Strategy):
    """Mutual information between the answer and θ on Laplace posterior samples (BALD)."""

    name = "bald"

    def score_pairs(self, ctx):
        samples = ctx.reward_samples
        mean_p = np.zeros((ctx.n, ctx.n))
        mean_h = np.zeros((ctx.n, ctx.n))
        for r in samples:  # one N×N slice per sample keeps memory at O(N²)
            p = expit(r[:, None] - r[None, :])
            mean_p += p
            mean_h += _binary_entropy(p)
        return _binary_entropy(mean_p / len(samples)) - mean_h / len(samples)

    def score_sets(self, ctx, sets):
        p = softmax(ctx.reward_samples[:, sets], axis=2)  # [S, M, K]
        return _entropy(p.mean(axis=0)) - _entropy(p).mean(axis=0)


class ThompsonStrategy(Strategy):
    """Each option is the best candidate under its own posterior draw of θ."""

    name = "thompson"

    def _pick(self, ctx, k):
        query: list[int] = []
        for _ in range(k):
            chol = np.linalg.cholesky(ctx.covariance + 1e-12 * np.eye(len(ctx.covariance)))
            theta = ctx.model.theta_ + chol @ ctx.rng.standard_normal(len(ctx.covariance))
            rewards = ctx.features @ theta
            rewards[query] = -np.inf
            query.append(int(rewards.argmax()))
        return tuple(query), 0.0


class DOptimalStrategy(Strategy):
    """Greedy D-optimal: maximise log det of the posterior precision after the answer.

    ``theta_aware=True`` weights by the Fisher at θ̂ (before any answer θ̂ = 0, i.e. θ-agnostic);
    ``theta_aware=False`` always uses θ = 0 (uniform choice probabilities).
    """

    def __init__(self, theta_aware: bool = True):
        self.theta_aware = theta_aware
        self.name = "d_optimal" if theta_aware else "d_optimal_agnostic"

    def score_pairs(self, ctx):
        return fisher.pair_d_gain(fisher.pair_quadratic(ctx.gram), ctx.pair_weights(self.theta_aware))

    def score_sets(self, ctx, sets):
        return fisher.set_d_gain(fisher.submatrix(ctx.gram, sets), ctx.set_weights(sets, self.theta_aware))


class AOptimalStrategy(Strategy):
    """Greedy A-optimal: maximise the drop in the posterior variance trace tr(V⁻¹)."""

    def __init__(self, theta_aware: bool = True):
        self.theta_aware = theta_aware
        self.name = "a_optimal" if theta_aware else "a_optimal_agnostic"

    def score_pairs(self, ctx):
        q, q2 = fisher.pair_quadratic(ctx.gram), fisher.pair_quadratic(ctx.gram2)
        return fisher.pair_a_gain(q, q2, ctx.pair_weights(self.theta_aware))

    def score_sets(self, ctx, sets):
        weight = ctx.set_weights(sets, self.theta_aware)
        return fisher.set_a_gain(fisher.submatrix(ctx.gram, sets), fisher.submatrix(ctx.gram2, sets), weight)


STRATEGIES = {
    "random": RandomStrategy,
    "uncertainty": UncertaintyStrategy,
    "bald": BaldStrategy,
    "thompson": ThompsonStrategy,
    "d_optimal": lambda: DOptimalStrategy(theta_aware=True),
    "d_optimal_agnostic": lambda: DOptimalStrategy(theta_aware=False),
    "a_optimal": lambda: AOptimalStrategy(theta_aware=True),
    "a_optimal_agnostic": lambda: AOptimalStrategy(theta_aware=False),
}


def make_strategy(name: str) -> Strategy:
    """A strategy by name (see ``STRATEGIES``); the default is ``"d_optimal"`` (θ-aware)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    return STRATEGIES[name]()
