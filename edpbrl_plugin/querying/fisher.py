"""Fisher information of questions and the D- / A-optimal gains, for every candidate question at once.

A question Q (a pair or a K-set of candidates with features F_Q ``[K, d]``) has Fisher information
F_Qᵀ W_Q F_Q with a K×K weight W_Q: diag(p) − p pᵀ for a K-way choice (p = choice probabilities;
uniform at θ = 0, the θ-agnostic surrogate) and w(Δ)·[[1, −1], [−1, 1]] for a pair (w = p(1 − p)
under Bradley-Terry). With Σ = V⁻¹ the posterior covariance and G = Φ Σ Φᵀ, G₂ = Φ Σ² Φᵀ:

* D-gain  log det(V + I_Q) − log det V = log det(I_K + W_Q G_QQ)           (Sylvester)
* A-gain  tr(V⁻¹) − tr((V + I_Q)⁻¹)    = tr((I_K + S G_QQ S)⁻¹ S G₂_QQ S), S = W_Q^{1/2}  (Woodbury)

For pairs these reduce to log(1 + w q) and w q₂ / (1 + w q) with q = G_aa + G_bb − 2 G_ab: one matrix
product scores all N² pairs, no loop. Half the D-gain is the expected information gain in nats
(entropy drop of the Gaussian posterior).
"""

from __future__ import annotations

import numpy as np


def mnl_weight(probabilities: np.ndarray) -> np.ndarray:
    """diag(p) − p pᵀ for probabilities ``[..., K]`` -> ``[..., K, K]``."""
    p = np.asarray(probabilities, dtype=np.float64)
    return np.einsum("...i,ij->...ij", p, np.eye(p.shape[-1])) - p[..., :, None] * p[..., None, :]


def pair_weight_matrix(w: np.ndarray) -> np.ndarray:
    """w·[[1, −1], [−1, 1]] for pair weights ``[...]`` -> ``[..., 2, 2]``."""
    return np.asarray(w, dtype=np.float64)[..., None, None] * np.array([[1.0, -1.0], [-1.0, 1.0]])


def query_fisher(features: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Fisher F_Qᵀ W F_Q for query features ``[..., K, d]`` and weights ``[..., K, K]`` -> ``[..., d, d]``."""
    return np.einsum("...kd,...kl,...le->...de", features, weight, features)


def mnl_fisher(features: np.ndarray, theta: np.ndarray | None = None) -> np.ndarray:
    """Σ pᵢ φᵢφᵢᵀ − (Σ pᵢφᵢ)(Σ pᵢφᵢ)ᵀ of K-way queries ``[..., K, d]``; θ = None is θ-agnostic (p uniform)."""
    features = np.asarray(features, dtype=np.float64)
    if theta is None:
        p = np.full(features.shape[:-1], 1.0 / features.shape[-2])
    else:
        logits = features @ theta
        p = np.exp(logits - logits.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
    return query_fisher(features, mnl_weight(p))


def gram_matrices(features: np.ndarray, covariance: np.ndarray, second: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """G = Φ Σ Φᵀ and (if ``second``) G₂ = Φ Σ² Φᵀ, both ``[N, N]``."""
    projected = features @ covariance  # [N, d] = Φ Σ
    gram = projected @ features.T
    gram2 = projected @ projected.T if second else None
    return gram, gram2


def pair_quadratic(gram: np.ndarray) -> np.ndarray:
    """q_ab = zᵀ Σ z = G_aa + G_bb − 2 G_ab for every pair ``[N, N]`` (clamped at 0 against rounding)."""
    diag = np.diag(gram)
    return np.maximum(diag[:, None] + diag[None, :] - 2.0 * gram, 0.0)


def pair_d_gain(q: np.ndarray, w: np.ndarray) -> np.ndarray:
    """log(1 + w q) for all pairs."""
    return np.log1p(w * q)


def pair_a_gain(q: np.ndarray, q2: np.ndarray, w: np.ndarray) -> np.ndarray:
    """w q₂ / (1 + w q) for all pairs (Sherman-Morrison)."""
    return w * q2 / (1.0 + w * q)


def _sqrt_psd(weight: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(weight)
    return np.einsum("...ij,...j,...kj->...ik", vectors, np.sqrt(np.clip(values, 0.0, None)), vectors)


def set_d_gain(gram_qq: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """log det(I + W G_QQ) for stacks ``[..., K, K]``."""
    s = _sqrt_psd(weight)
    k = gram_qq.shape[-1]
    return np.linalg.slogdet(np.eye(k) + s @ gram_qq @ s)[1]


def set_a_gain(gram_qq: np.ndarray, gram2_qq: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """tr((I + S G S)⁻¹ S G₂ S) for stacks ``[..., K, K]``."""
    s = _sqrt_psd(weight)
    k = gram_qq.shape[-1]
    inner = np.eye(k) + s @ gram_qq @ s
    return np.trace(np.linalg.solve(inner, s @ gram2_qq @ s), axis1=-2, axis2=-1)


def submatrix(matrix: np.ndarray, sets: np.ndarray) -> np.ndarray:
    """``matrix[Q][:, Q]`` for each row Q of ``sets`` ``[M, K]`` -> ``[M, K, K]``."""
    return matrix[sets[:, :, None], sets[:, None, :]]


def condition_on_query(
    covariance: np.ndarray,
    gram: np.ndarray,
    gram2: np.ndarray | None,
    features: np.ndarray,
    query: np.ndarray,
    weight: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Posterior after one more answer to ``query`` (Woodbury, rank <= K−1): new Σ, G and G₂.

    Used by greedy batch selection: O(N² K + d² K) per pick instead of recomputing Φ Σ Φᵀ.
    """
    s = _sqrt_psd(weight)
    fq = features[query]  # [K, d]
    inner_inv = np.linalg.inv(np.eye(len(query)) + s @ gram[np.ix_(query, query)] @ s)
    u = covariance @ fq.T @ s  # [d, K]: Σ F_Qᵀ S, so Σ_new = Σ − U C Uᵀ with C = inner_inv
    a = features @ u  # [N, K]
    new_gram = gram - a @ inner_inv @ a.T
    new_gram2 = None
    if gram2 is not None:
        # Σ_new² = Σ² − Σ U C Uᵀ − U C Uᵀ Σ + U C (UᵀU) C Uᵀ, projected onto Φ.
        b = features @ (covariance @ u)  # [N, K]: Φ Σ U
        ac = a @ inner_inv
        cross = b @ ac.T
        new_gram2 = gram2 - cross - cross.T + ac @ (u.T @ u) @ ac.T
    return covariance - u @ inner_inv @ u.T, new_gram, new_gram2
