"""Choice models of a user's answers: the linear reward r(x) = θᵀφ(x) behind every question type.

One model covers every answer a person can give:

* a K-way choice (K >= 3): multinomial logit, P(i | Q) = softmax(θᵀφ_Q)_i;
* a pair answer "A", "B" or "tie": an ordered logit with a tie band ±δ (``tie_margin``):
  P(A) = σ(Δ − δ), P(B) = σ(−Δ − δ), P(tie) = the rest, Δ = θᵀ(φ_A − φ_B). δ = 0 is Bradley-Terry;
* like / dislike of one image (absolute feedback, PAPA): P(like) = σ(θᵀφ + b) with a learned bias b;
* skip and "both bad": recorded by the store, no likelihood here.

A lapse ε (``lapse``) mixes every strict answer with a uniform guess: P = (1 − ε)·P_model + ε/n over the n
strict outcomes (A and B of a pair, the K options of a set, like and dislike); a tie is never a lapse. A person
who sometimes clicks the wrong image then widens the posterior instead of steering it: an answer that
contradicts a confident estimate costs at most −log(ε/n), so a few flipped answers cannot outweigh the rest.

``fit`` is an L2-regularised MLE (Newton with backtracking, finite on separable data; Fisher scoring when
ε > 0, whose likelihood is not log-concave); the Laplace posterior has precision V = λI + Σ Fisher(q; θ̂).
Learned state ends in ``_``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy.special import expit, log_expit, logsumexp, softmax

from ._validation import check_features, check_positive
from .answers import DISLIKE, LIKE, TIE, Answer


class _Data:
    """Answers as feature arrays, grouped by likelihood type so every term is one vectorised op."""

    def __init__(self, dim: int):
        self.dim = dim
        self.pairs = np.zeros((0, dim))  # winner − loser, or A − B for ties
        self.pair_tie = np.zeros(0, dtype=bool)
        self.sets: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # K -> (features [n, K, d], chosen [n])
        self.singles = np.zeros((0, dim))
        self.liked = np.zeros(0)
        self.n_answers = 0
        self.n_informative = 0

    def add(self, features: np.ndarray, answers: list[Answer]) -> None:
        n_rows = features.shape[0]
        pairs, ties, singles, liked, sets = [], [], [], [], {}
        for answer in answers:
            if max(answer.query) >= n_rows or min(answer.query) < 0:
                raise ValueError(
                    f"answer {answer} references candidate {max(answer.query)} but features has only {n_rows} rows"
                )
            self.n_answers += 1
            if not answer.informative:
                continue
            self.n_informative += 1
            rows = features[list(answer.query)]
            if answer.outcome in (LIKE, DISLIKE):
                singles.append(rows[0])
                liked.append(1.0 if answer.outcome == LIKE else 0.0)
            elif len(rows) == 2:
                first = 0 if answer.outcome in (0, TIE) else 1
                pairs.append(rows[first] - rows[1 - first])
                ties.append(answer.outcome == TIE)
            else:
                sets.setdefault(len(rows), ([], []))
                sets[len(rows)][0].append(rows)
                sets[len(rows)][1].append(answer.outcome)
        if pairs:
            self.pairs = np.vstack([self.pairs, pairs])
            self.pair_tie = np.concatenate([self.pair_tie, ties])
        if singles:
            self.singles = np.vstack([self.singles, singles])
            self.liked = np.concatenate([self.liked, liked])
        for k, (rows, chosen) in sets.items():
            old_rows, old_chosen = self.sets.get(k, (np.zeros((0, k, self.dim)), np.zeros(0, dtype=int)))
            self.sets[k] = (np.concatenate([old_rows, rows]), np.concatenate([old_chosen, chosen]))


def pair_fisher_weight(delta: np.ndarray, tie_margin: float, lapse: float = 0.0) -> np.ndarray:
    """Fisher information w(Δ) of a pair answer about Δ = θᵀz: Fisher = w(Δ)·z zᵀ. BT (δ = 0, ε = 0): p(1 − p).

    With l = σ(Δ − δ), u = σ(Δ + δ) and lapse ε: P(A) = (1 − ε)l + ε/2, P(B) = (1 − ε)(1 − u) + ε/2,
    P(tie) = (1 − ε)(u − l), and w = Σ_o (∂P_o/∂Δ)² / P_o over the three outcomes.
    """
    delta = np.asarray(delta, dtype=np.float64)
    low = expit(delta - tie_margin)
    high = expit(delta + tie_margin) if tie_margin > 0 else low
    v_low, v_high = low * (1 - low), high * (1 - high)
    keep = 1.0 - lapse
    weight = keep**2 * (v_low**2 / (keep * low + lapse / 2) + v_high**2 / (keep * (1 - high) + lapse / 2))
    if tie_margin > 0:
        # the tie term (u(1−u) − l(1−l))² / (u − l), written without the cancellation of u − l at large |Δ|:
        # u − l = σ(Δ+δ)σ(δ−Δ)(1 − e^{−2δ})
        gap = expit(delta + tie_margin) * expit(tie_margin - delta) * -np.expm1(-2 * tie_margin)
        weight = weight + keep * (v_high - v_low) ** 2 / gap
    return weight


def _lapsed(log_p: np.ndarray, lapse: float, n_outcomes: int) -> np.ndarray:
    """log((1 − ε)·P + ε/n) from log P, stable for any P."""
    if lapse == 0:
        return log_p
    return np.logaddexp(np.log1p(-lapse) + log_p, np.log(lapse / n_outcomes))


class ChoiceModel:
    """L2-regularised multinomial-logit / ordered-logit / like-dislike model with a Laplace posterior.

    Args:
        reg: λ > 0, the prior precision (L2 penalty (λ/2)‖θ‖²); keeps separable data finite.
        tie_margin: δ >= 0 of the pair tie band (in reward units); ties need δ > 0.
        lapse: ε in [0, 1), the probability that a strict answer is a uniform guess (a slip of the hand).
        max_iter, tol: Newton iteration limit and stopping tolerance on the step size.

    Attributes (after ``fit``):
        theta_ ``[d]``, bias_ (like/dislike offset), precision_ ``[d, d]`` (V), covariance_ ``[d, d]``,
        n_answers_ (all answers, skips included), n_informative_, n_iter_.
    """

    def __init__(
        self, reg: float = 1.0, tie_margin: float = 0.25, lapse: float = 0.0, max_iter: int = 100, tol: float = 1e-8
    ):
        self.reg = reg
        self.tie_margin = tie_margin
        self.lapse = lapse
        self.max_iter = max_iter
        self.tol = tol

    # ------------------------------------------------------------------ fitting
    def fit(self, features, answers: Iterable[Answer]) -> ChoiceModel:
        """Fit from scratch on ``answers`` whose queries index rows of ``features`` ``[N, d]``."""
        features = check_features(features)
        self._check_params()
        self._data = _Data(features.shape[1])
        self._w = np.zeros(features.shape[1] + 1)
        return self._update(features, answers)

    def partial_fit(self, features, answers: Iterable[Answer]) -> ChoiceModel:
        """Add answers and re-optimise from the current estimate (typically 1-3 Newton steps)."""
        if not hasattr(self, "_data"):
            return self.fit(features, answers)
        features = check_features(features, dim=self._data.dim)
        return self._update(features, answers)

    def _check_params(self) -> None:
        check_positive(self.reg, "reg")
        if not np.isfinite(self.tie_margin) or self.tie_margin < 0:
            raise ValueError(f"tie_margin must be a finite number >= 0, got {self.tie_margin}")
        if not 0 <= self.lapse < 1:
            raise ValueError(f"lapse must be a probability in [0, 1), got {self.lapse}")

    def _update(self, features: np.ndarray, answers: Iterable[Answer]) -> ChoiceModel:
        answers = [a if isinstance(a, Answer) else Answer(*a) for a in answers]
        if self.tie_margin == 0 and any(a.outcome == TIE for a in answers):
            raise ValueError("a 'tie' answer has zero probability when tie_margin == 0; set tie_margin > 0")
        self._data.add(features, answers)
        self._newton()
        self._set_posterior()
        return self

    def _terms(self, w: np.ndarray, hessian: bool, fisher: bool = False):
        """Negative log posterior (up to a constant), its gradient and Hessian: observed, or expected (the Fisher
        information) when ``fisher`` or when a lapse makes the observed one indefinite."""
        data, d, margin, lapse = self._data, self._data.dim, self.tie_margin, self.lapse
        fisher = fisher or lapse > 0
        keep = 1.0 - lapse
        theta = w[:d]
        value = 0.5 * self.reg * (w @ w)
        grad = self.reg * w.copy()
        hess = self.reg * np.eye(d + 1) if hessian else None
        if len(data.pairs):
            z, tie = data.pairs, data.pair_tie
            delta = z @ theta
            strict = ~tie
            ds = delta[strict]
            log_p = _lapsed(log_expit(ds - margin), lapse, 2)
            value -= log_p.sum()
            dnll = np.zeros_like(delta)
            # −∂ log P(A)/∂Δ = −(1 − ε)·l(1 − l) / P(A), in logs so that no factor underflows
            dnll[strict] = -np.exp(np.log(keep) + log_expit(ds - margin) + log_expit(margin - ds) - log_p)
            if tie.any():
                dt = delta[tie]
                value -= (log_expit(dt + margin) + log_expit(margin - dt)).sum()
                value -= tie.sum() * (np.log1p(-np.exp(-2 * margin)) + np.log(keep))
                dnll[tie] = -expit(-(dt + margin)) + expit(dt - margin)
            grad[:d] += z.T @ dnll
            if hessian:
                if fisher:
                    curv = pair_fisher_weight(delta, margin, lapse)
                else:
                    s = expit(delta - margin)
                    curv = s * (1 - s)
                    if tie.any():
                        u, m = expit(delta[tie] + margin), expit(margin - delta[tie])
                        curv[tie] = u * (1 - u) + m * (1 - m)
                hess[:d, :d] += (z * curv[:, None]).T @ z
        for rows, chosen in data.sets.values():
            n, k = len(chosen), rows.shape[1]
            logits = rows @ theta
            p = softmax(logits, axis=1)
            log_p = _lapsed(logits - logsumexp(logits, axis=1, keepdims=True), lapse, k)  # [n, K]
            value -= log_p[np.arange(n), chosen].sum()
            mean = np.einsum("nk,nkd->nd", p, rows)
            # ∂P_c/∂θ = (1 − ε)·p_c(φ_c − φ̄); divided by P_c this is (φ_c − φ̄) times the share of P_c not a lapse
            share = keep * p[np.arange(n), chosen] / np.exp(log_p[np.arange(n), chosen])
            grad[:d] += (share[:, None] * (mean - rows[np.arange(n), chosen])).sum(0)
            if hessian:
                hess[:d, :d] += np.einsum("nkd,nkl,nle->de", rows, self.set_weight(p), rows)
        if len(data.singles):
            x = np.hstack([data.singles, np.ones((len(data.singles), 1))])
            logit = x @ w
            sign = 2 * data.liked - 1
            log_p = _lapsed(log_expit(sign * logit), lapse, 2)
            value -= log_p.sum()
            q = expit(logit)
            shrink = np.exp(np.log(keep) + log_expit(sign * logit) - log_p)  # 1 without a lapse
            grad += x.T @ (shrink * (q - data.liked))
            if hessian:
                curv = keep**2 * (q * (1 - q)) ** 2 * (1 / (keep * q + lapse / 2) + 1 / (keep * (1 - q) + lapse / 2))
                hess += (x * curv[:, None]).T @ x
        return value, grad, hess

    def _newton(self) -> None:
        w = self._w
        value, grad, hess = self._terms(w, hessian=True)
        for iteration in range(1, self.max_iter + 1):
            step = np.linalg.solve(hess, grad)
            t = 1.0
            while True:
                candidate = w - t * step
                new_value = self._terms(candidate, hessian=False)[0]
                if new_value <= value - 1e-4 * t * (grad @ step) or t < 1e-10:
                    break
                t *= 0.5
            w = candidate
            done = np.max(np.abs(t * step)) < self.tol or abs(value - new_value) < self.tol * max(1.0, abs(value))
            value, grad, hess = self._terms(w, hessian=True)
            if done:
                break
        self._w = w
        self.n_iter_ = iteration

    def _set_posterior(self) -> None:
        d = self._data.dim
        _, _, fisher = self._terms(self._w, hessian=True, fisher=True)
        full_cov = np.linalg.inv(fisher)
        self.theta_ = self._w[:d].copy()
        self.bias_ = float(self._w[d])
        self.covariance_ = 0.5 * (full_cov[:d, :d] + full_cov[:d, :d].T)
        # Marginal precision of θ (Schur complement of the bias); equals λI + Σ Fisher when no likes were given.
        schur = fisher[:d, :d] - np.outer(fisher[:d, d], fisher[d, :d]) / fisher[d, d]
        self.precision_ = 0.5 * (schur + schur.T)
        self.n_answers_ = self._data.n_answers
        self.n_informative_ = self._data.n_informative

    # ------------------------------------------------------------------ prediction
    def _check_fitted(self) -> None:
        if not hasattr(self, "theta_"):
            raise RuntimeError(
                "this ChoiceModel is not fitted yet; call fit(features, answers) first (answers may be [])"
            )

    def reward(self, features) -> np.ndarray:
        """Estimated reward θ̂ᵀφ per row ``[N]``."""
        self._check_fitted()
        return check_features(features, dim=len(self.theta_)) @ self.theta_

    def reward_variance(self, features) -> np.ndarray:
        """Posterior variance of each row's reward ``[N]``."""
        self._check_fitted()
        x = check_features(features, dim=len(self.theta_))
        return np.einsum("nd,de,ne->n", x, self.covariance_, x)

    def predict_proba(self, features, queries) -> np.ndarray:
        """Strict-choice probabilities ``[n, K]`` (softmax of rewards, mixed with the lapse's uniform guess) for
        queries ``[n, K]`` of row indices."""
        rewards = self.reward(features)
        queries = np.asarray(queries)
        if queries.ndim != 2 or queries.shape[1] < 2:
            raise ValueError(f"queries must be an [n, K >= 2] array of candidate indices, got shape {queries.shape}")
        if queries.size and (queries.min() < 0 or queries.max() >= len(rewards)):
            raise ValueError(f"queries reference candidates outside 0..{len(rewards) - 1}")
        return (1.0 - self.lapse) * softmax(rewards[queries], axis=1) + self.lapse / queries.shape[1]

    def predict(self, features, queries) -> np.ndarray:
        """Position of the predicted choice per query ``[n]``."""
        return self.predict_proba(features, queries).argmax(axis=1)

    def sample_theta(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """``n`` draws ``[n, d]`` from the Laplace posterior N(θ̂, V⁻¹)."""
        self._check_fitted()
        rng = np.random.default_rng(rng)
        chol = np.linalg.cholesky(self.covariance_ + 1e-12 * np.eye(len(self.theta_)))
        return self.theta_ + rng.standard_normal((n, len(self.theta_))) @ chol.T

    def log_likelihood(self) -> float:
        """Log-likelihood of the answers seen so far at θ̂ (penalty excluded)."""
        self._check_fitted()
        value = self._terms(self._w, hessian=False)[0]
        return float(-(value - 0.5 * self.reg * (self._w @ self._w)))

    def pair_weight(self, delta) -> np.ndarray:
        """Fisher weight w(Δ) of a pair question under this model (Fisher = w·z zᵀ)."""
        return pair_fisher_weight(delta, self.tie_margin, self.lapse)

    def set_weight(self, probabilities) -> np.ndarray:
        """Fisher weight ``[..., K, K]`` of K-way questions whose noise-free choice probabilities are
        ``[..., K]`` (Fisher = Φᵀ W Φ): W = (1 − ε)²·M diag(1/P) M with M = diag(p) − p pᵀ and
        P = (1 − ε)p + ε/K; without a lapse W = M."""
        p = np.asarray(probabilities, dtype=np.float64)
        m = np.einsum("...i,ij->...ij", p, np.eye(p.shape[-1])) - p[..., :, None] * p[..., None, :]
        if self.lapse == 0:
            return m
        keep = 1.0 - self.lapse
        lapsed = keep * p + self.lapse / p.shape[-1]
        return keep**2 * np.einsum("...ij,...j,...jk->...ik", m, 1.0 / lapsed, m)
