"""ED-PBRL structured query design: choose prompt-building policies by Frank-Wolfe over visitation measures.

A prompt is built slot by slot (H slots, one word per slot from that slot's list, blank included); a
prompt's feature is the sum of its words' features. A question shows K prompts, option q drawn from
policy π_q. With d_q(h, a) the probability that policy q puts word a in slot h and
μ_{q,h} = Σ_a d_q(h, a) φ(h, a), the θ-agnostic information of one episode, summed over slots, is

    Ĩ = Σ_h (1/K²) [ (K−1) Σ_q Σ_a d_q(h, a) φφᵀ − Σ_{q≠q'} μ_{q,h} μ_{q',h}ᵀ ]

(for K = 2 each slot's term is ¼ E[(φ_{1,h} − φ_{2,h})(φ_{1,h} − φ_{2,h})ᵀ]; cross-slot terms are
dropped by design: the per-slot, "dense feedback" information). The design maximises

    A-optimal (default): −tr(M⁻¹)    D-optimal: log det M,    M = Ĩ + P / (H·T)

with P = λI (or, for adaptive re-design, the current posterior precision) and T the episode budget.
Ĩ is affine in each policy's visitation, so Frank-Wolfe applies on the product of the policies' simplices:
the linear oracle picks, per policy and slot, the word with the largest gradient reward. The authors step
block by block (each step mixes one policy with its vertex, then re-scores); the ``"joint"`` schedule mixes every
policy with its vertex in one step, scored from one gradient. The solver keeps each policy's moments (μ and
Σ_h Σ_a d φφᵀ) and updates them in O(H d²) per step; all words are scored with one ``|A| × d`` by ``d × d``
product per gradient, which is most of the time at CLIP's scale (2,500 words, d = 768), so the joint schedule
is about K times faster for the same number of moves.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import lapack

from ..learning._validation import check_features, check_positive


@dataclass
class WordSlots:
    """Word lists per slot and their feature tables; slot h's row 0 is the blank word when ``blank``."""

    words: list[list[str]]
    features: list[np.ndarray]

    @classmethod
    def from_lists(cls, words: list[list[str]], features: list, blank: bool = True) -> WordSlots:
        """Validate word lists (one per slot) and feature tables ``[len(words[h]), d]``; prepend a blank word."""
        if not words:
            raise ValueError("words must list at least one slot")
        if len(features) != len(words):
            raise ValueError(f"features has {len(features)} tables but words has {len(words)} slots")
        out_words, out_features, dim = [], [], None
        for h, (slot_words, table) in enumerate(zip(words, features)):
            slot_words = [str(w).strip() for w in slot_words]
            if not slot_words or any(not w for w in slot_words):
                raise ValueError(f"word list for slot {h} is empty or contains an empty word; give each slot >= 1 word")
            table = check_features(table, name=f"features[{h}]", dim=dim)
            dim = table.shape[1]
            if len(table) != len(slot_words):
                raise ValueError(f"features[{h}] has {len(table)} rows but slot {h} has {len(slot_words)} words")
            if blank:
                slot_words = [""] + slot_words
                table = np.vstack([np.zeros((1, dim)), table])
            out_words.append(slot_words)
            out_features.append(table)
        return cls(out_words, out_features)

    @property
    def n_slots(self) -> int:
        return len(self.words)

    @property
    def dim(self) -> int:
        return self.features[0].shape[1]

    def prompt(self, word_indices, base_prompt: str = "") -> str:
        """Base prompt + ", ".join(chosen words), blanks left out."""
        chosen = [self.words[h][a] for h, a in enumerate(word_indices) if self.words[h][a]]
        return ", ".join(([base_prompt] if base_prompt else []) + chosen)

    def prompt_features(self, episodes: np.ndarray) -> np.ndarray:
        """Summed word features for word-index arrays ``[..., H]`` -> ``[..., d]``."""
        episodes = np.asarray(episodes)
        return sum(self.features[h][episodes[..., h]] for h in range(self.n_slots))


def theta_agnostic_information(slots: WordSlots, policies: list[list[np.ndarray]], k: int, per_slot: bool = False):
    """Ĩ of K-way questions whose option q is drawn from ``policies[q]`` (or all from ``policies[0]``).

    ``policies[q][h]`` are slot h's word probabilities. Returns ``[d, d]``, or one ``[d, d]`` per slot
    with ``per_slot=True`` (Ĩ is their sum: cross-slot terms are not part of it).
    """
    shared = len(policies) == 1
    if not shared and len(policies) != k:
        raise ValueError(f"give one policy per option (k={k}) or one shared policy, got {len(policies)}")
    terms = []
    for h, table in enumerate(slots.features):
        probs = [policies[0 if shared else q][h] for q in range(k)]
        means = [p @ table for p in probs]
        second = sum((table * p[:, None]).T @ table for p in probs)
        total = sum(means)
        cross = np.outer(total, total) - sum(np.outer(m, m) for m in means)
        terms.append(((k - 1) * second - cross) / k**2)
    return terms if per_slot else sum(terms)


@dataclass
class DesignStep:
    round: int
    policies: tuple[int, ...]  # the policies this step moved
    objective: float
    gap: float
    step_size: float


@dataclass
class _State:
    visitation: list[list[np.ndarray]]  # [policy][slot] -> probabilities over that slot's words
    means: np.ndarray  # [P, H, d]
    second: np.ndarray  # [P, d, d] = Σ_h Σ_a d φφᵀ
    history: list[DesignStep] = field(default_factory=list)


class PromptDesign:
    """Frank-Wolfe design of K query policies over a slot-by-slot prompt space.

    Args:
        k: options per question (K).
        budget: T, the number of episodes the design is for (scales the regulariser).
        reg: λ > 0.
        criterion: ``"A"`` (−tr M⁻¹, default) or ``"D"`` (log det M).
        rounds, steps_per_policy: each round takes ``steps_per_policy`` steps per policy (authors: 8 rounds × up
            to 3 steps).
        schedule: ``"block"`` (the authors': one policy per step, each step re-scored) or ``"joint"`` (every
            policy per step, from one gradient: a K-th of the block schedule's gradients for the same moves).
        step: ``"authors"`` (default: γ = 1/(1+k), k a per-policy counter kept across rounds; its first step
            jumps each policy to one prompt, and the objective dips far below the start before it recovers) or
            ``"line_search"`` (an adaptive step, backtracking on a curvature estimate: every step ascends, more
            slowly). Either way the design returned is the best iterate visited, the uniform start included.
        shared_policy: one policy for all K options (the objective is then concave; used in tests).

    Attributes (after ``fit``): ``policies_`` (``[P][H]`` word probabilities), ``objective_``,
    ``gap_`` (last), ``best_gap_``, ``information_`` (Ĩ ``[d, d]``), ``history_`` (one entry per step).
    """

    def __init__(
        self,
        k: int = 2,
        budget: int = 50,
        reg: float = 1.0,
        criterion: str = "A",
        rounds: int = 8,
        steps_per_policy: int = 3,
        step: str = "authors",
        schedule: str = "block",
        shared_policy: bool = False,
    ):
        self.k = k
        self.budget = budget
        self.reg = reg
        self.criterion = criterion
        self.rounds = rounds
        self.steps_per_policy = steps_per_policy
        self.step = step
        self.schedule = schedule
        self.shared_policy = shared_policy

    def _validate(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 2:
            raise ValueError(f"k must be an integer >= 2, got {self.k!r}")
        if isinstance(self.budget, bool) or not isinstance(self.budget, (int, np.integer)) or self.budget < 1:
            raise ValueError(f"budget must be an integer >= 1 (episodes), got {self.budget!r}")
        check_positive(self.reg, "reg")
        if self.criterion not in ("A", "D"):
            raise ValueError(f"criterion must be 'A' or 'D', got {self.criterion!r}")
        if self.step not in ("authors", "line_search"):
            raise ValueError(f"step must be 'authors' or 'line_search', got {self.step!r}")
        if self.schedule not in ("block", "joint"):
            raise ValueError(f"schedule must be 'block' or 'joint', got {self.schedule!r}")
        if self.rounds < 1 or self.steps_per_policy < 1:
            raise ValueError("rounds and steps_per_policy must be >= 1")

    # ------------------------------------------------------------------ objective pieces
    def _counts(self) -> np.ndarray:
        """Options drawn from each policy, c_p."""
        return np.array([self.k], np.float32) if self.shared_policy else np.ones(self.k, np.float32)

    def _information(self, means: np.ndarray, second: np.ndarray) -> np.ndarray:
        c, k = self._counts(), self.k
        total = np.tensordot(c, means, axes=1)  # m_h = Σ_p c_p μ_{p,h}  [H, d]
        flat = (means * np.sqrt(c)[:, None, None]).reshape(-1, means.shape[-1])
        cross = total.T @ total - flat.T @ flat
        return ((k - 1) * np.tensordot(c, second, axes=1) - cross) / k**2

    def _matrix(self, information: np.ndarray) -> np.ndarray:
        return information + self._prior

    def _value_and_inverse(self, m: np.ndarray) -> tuple[float, np.ndarray]:
        """Objective and M⁻¹ (Cholesky; the gradient matrix ∇ is M⁻² for A and M⁻¹ for D)."""
        potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (m,))
        chol, info = potrf(m, lower=True)
        if info != 0:
            raise np.linalg.LinAlgError("the design's information matrix is not positive definite")
        inv, _ = potri(chol, lower=True)
        inv = np.tril(inv) + np.tril(inv, -1).T
        if self.criterion == "A":
            return -float(np.trace(inv)), inv
        return 2.0 * float(np.log(np.diag(chol)).sum()), inv

    def _word_rewards(self, inv: np.ndarray, projected: np.ndarray, state: _State, policy: int) -> np.ndarray:
        """Gradient ∂F/∂d_p(h, a) for every word (all slots stacked) ``[|A|]``; ``projected`` = Φ M⁻¹."""
        c, k = self._counts(), self.k
        others = np.tensordot(c, state.means, axes=1) - state.means[policy]  # m_h − μ_{p,h} [H, d]
        rows = np.arange(len(self._phi))
        if self.criterion == "A":  # ∇ = M⁻²: φᵀ∇φ = ‖M⁻¹φ‖², φᵀ∇ν = (M⁻¹φ)ᵀ(M⁻¹ν)
            quad = np.einsum("ad,ad->a", projected, projected)
            lin = (projected @ (others @ inv).T)[rows, self._slot_of]
        else:
            quad = np.einsum("ad,ad->a", projected, self._phi)
            lin = (projected @ others.T)[rows, self._slot_of]
        return c[policy] / k**2 * ((k - 1) * quad - 2.0 * lin)

    # ------------------------------------------------------------------ solver
    def fit(self, slots: WordSlots, prior_precision: np.ndarray | None = None) -> PromptDesign:
        """Run Frank-Wolfe (block by block, or jointly: ``schedule``) from uniform policies.

        ``prior_precision`` ``[d, d]`` (adaptive re-design): the current posterior precision from the
        answers so far replaces λI, so the design targets what is still uncertain at θ̂.
        """
        self._validate()
        if not isinstance(slots, WordSlots):
            raise ValueError("slots must be a WordSlots (build it with WordSlots.from_lists(words, features))")
        d = slots.dim
        if prior_precision is None:
            prior = self.reg * np.eye(d)
        else:
            prior = np.asarray(check_features(prior_precision, name="prior_precision", dim=d))
            if prior.shape != (d, d):
                raise ValueError(f"prior_precision must be [{d}, {d}], got {prior.shape}")
        self._slots = slots
        self._prior = prior.astype(np.float32) / np.float32(slots.n_slots * self.budget)
        self._phi = np.vstack(slots.features).astype(np.float32)
        sizes = [len(f) for f in slots.features]
        self._slot_of = np.repeat(np.arange(len(sizes)), sizes)
        self._offsets = np.concatenate([[0], np.cumsum(sizes)])
        n_policies = 1 if self.shared_policy else self.k

        visitation = [[np.full(n, 1.0 / n) for n in sizes] for _ in range(n_policies)]
        means = np.stack([[v @ f for v, f in zip(pol, slots.features)] for pol in visitation]).astype(np.float32)
        second = np.stack(
            [sum((f * v[:, None]).T @ f for v, f in zip(pol, slots.features)) for pol in visitation]
        ).astype(np.float32)
        state = _State(visitation, means, second)
        groups = [[p] for p in range(n_policies)] if self.schedule == "block" else [list(range(n_policies))]
        counters = np.zeros(len(groups), dtype=int)
        curvatures = np.full(len(groups), np.inf)  # the line search's per-group curvature estimates
        best_gap = np.inf
        value, inv = self._value_and_inverse(self._matrix(self._information(state.means, state.second)))
        best = (value, copy.deepcopy(state.visitation), state.means.copy(), state.second.copy())
        for round_ in range(self.rounds):
            for g, group in enumerate(groups):
                for _ in range(self.steps_per_policy):
                    projected = self._phi @ inv  # [|A|, d]: rows M⁻¹φ, the one |A|×d×d product per step
                    vertices, gap = {}, 0.0
                    for p in group:
                        vertices[p], policy_gap = self._oracle(
                            self._word_rewards(inv, projected, state, p), state.visitation[p]
                        )
                        gap += policy_gap
                    best_gap = min(best_gap, gap)
                    state.history.append(DesignStep(round_, tuple(group), value, gap, 0.0))
                    if self.step == "authors":
                        gamma = 1.0 / (1.0 + counters[g])
                        self._move(state, vertices, gamma)
                        value, inv = self._value_and_inverse(self._matrix(self._information(state.means, state.second)))
                    else:
                        gamma, value, new_inv, curvatures[g] = self._line_search(
                            state, vertices, gap, value, curvatures[g]
                        )
                        if gamma > 0:
                            self._move(state, vertices, gamma)
                            inv = new_inv
                    counters[g] += 1
                    state.history[-1].step_size = float(gamma)
                    if value > best[0]:
                        best = (value, copy.deepcopy(state.visitation), state.means.copy(), state.second.copy())
        _, state.visitation, state.means, state.second = best
        info = self._information(state.means, state.second)
        self.objective_ = self._value_and_inverse(self._matrix(info))[0]
        self.information_ = info.astype(np.float64)
        self.policies_ = [[v.copy() for v in pol] for pol in state.visitation]
        self.history_ = state.history
        self.gap_ = state.history[-1].gap
        self.best_gap_ = float(best_gap)
        return self

    def _oracle(self, rewards: np.ndarray, visitation: list[np.ndarray]) -> tuple[np.ndarray, float]:
        """Per slot, the word with the largest reward (deterministic slot chain); and the block's FW gap."""
        vertex, gap = [], 0.0
        for h, v in enumerate(visitation):
            r = rewards[self._offsets[h] : self._offsets[h + 1]]
            best = int(r.argmax())
            vertex.append(best)
            gap += float(r[best] - v @ r)
        return np.array(vertex), gap

    def _moved_moments(
        self, state: _State, vertices: dict[int, np.ndarray], gamma: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Policy moments (means ``[P, H, d]``, second ``[P, d, d]``) after mixing each policy ``p`` of
        ``vertices`` with its vertex by ``gamma``; ``state`` is left as it is."""
        means, second = state.means.copy(), state.second.copy()
        for p, vertex in vertices.items():
            words = self._phi[self._offsets[:-1] + vertex]  # [H, d]
            means[p] = (1 - gamma) * state.means[p] + gamma * words
            second[p] = (1 - gamma) * state.second[p] + gamma * (words.T @ words)
        return means, second

    def _move(self, state: _State, vertices: dict[int, np.ndarray], gamma: float) -> None:
        for p, vertex in vertices.items():
            for h, v in enumerate(state.visitation[p]):
                v *= 1 - gamma
                v[vertex[h]] += gamma
        state.means, state.second = self._moved_moments(state, vertices, gamma)

    def _line_search(
        self, state: _State, vertices: dict[int, np.ndarray], gap: float, value: float, curvature: float
    ) -> tuple[float, float, np.ndarray | None, float]:
        """An ascending step toward the vertices, by backtracking on a curvature estimate.

        Pedregosa et al. 2020 (adaptive Frank-Wolfe): with L the curvature estimate (shrunk by 0.9 each step)
        and ‖δ‖² the squared size of the move in visitation space, try γ = min(1, gap / (L‖δ‖²)) and accept
        if F(γ) ≥ F(0) + γ·gap − γ²L‖δ‖²/2 (gap is F'(0) toward the vertices), else double L. Every accepted
        step ascends; the check costs the one factorisation the next gradient needs, where an exact search
        factors M(γ) about 20 times. Returns γ, F(γ), M(γ)⁻¹ (None when no step ascends: γ = 0) and the
        updated L.
        """
        if gap <= 0:
            return 0.0, value, None, curvature
        size = sum(  # ‖δ‖²
            1.0 - 2.0 * v[a] + float(v @ v)
            for p, vertex in vertices.items()
            for v, a in zip(state.visitation[p], vertex)
        )
        curvature = 0.9 * curvature if np.isfinite(curvature) else gap / size  # first step tries γ = 1
        while True:
            gamma = min(1.0, gap / (curvature * size))
            moments = self._moved_moments(state, vertices, gamma)
            new_value, new_inv = self._value_and_inverse(self._matrix(self._information(*moments)))
            if new_value >= value + gamma * gap - 0.5 * gamma**2 * curvature * size or gamma < 1e-10:
                return gamma, new_value, new_inv, curvature
            curvature *= 2.0

    # ------------------------------------------------------------------ rounding
    def sample(self, n_episodes: int, rng=None, dense: bool = False) -> np.ndarray:
        """Word indices ``[n_episodes, K, H]`` drawn from π_q(a | h) ∝ d_q(h, a).

        ``dense=True`` returns per-prefix questions ``[n_episodes * H, K, H]`` (slot h's question keeps
        words up to h and blanks (index 0, so build the slots with ``blank=True``) after it), one answer
        per slot prefix.
        """
        if not hasattr(self, "policies_"):
            raise RuntimeError("call fit(slots) before sample()")
        rng = np.random.default_rng(rng)
        n_slots = len(self.policies_[0])
        episodes = np.empty((n_episodes, self.k, n_slots), dtype=np.int64)
        for q in range(self.k):
            policy = self.policies_[0 if self.shared_policy else q]
            for h, probs in enumerate(policy):
                episodes[:, q, h] = rng.choice(len(probs), size=n_episodes, p=probs / probs.sum())
        if not dense:
            return episodes
        prefixes = np.repeat(episodes, n_slots, axis=0)
        level = np.tile(np.arange(n_slots), n_episodes)
        return np.where(np.arange(n_slots)[None, None, :] > level[:, None, None], 0, prefixes)
