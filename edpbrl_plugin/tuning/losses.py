"""Losses for online updates: Diffusion-DPO, PAPA / EPAPA, reward-weighted regression.

All operate on per-sample denoising errors from :class:`~.denoiser.Denoiser`, so they are written
once for pixel and latent pipelines and for ε- and v-prediction.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .denoiser import Denoiser


def per_sample_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (prediction.float() - target.float()).pow(2).mean(dim=tuple(range(1, prediction.ndim)))


def dpo_loss(model_w, model_l, ref_w, ref_l, beta: float, positive: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Diffusion-DPO: −log σ(−½β[(e_w − e_l) − (e_w^ref − e_l^ref) + λ·max(0, e_w − e_w^ref)]) on per-pair
    denoising errors.

    Plain DPO (λ = 0) only asks the winner to gain on the loser, so it can also make the winner worse than
    the base model does, as long as the loser gets worse faster: that is how images melt. λ > 0 (DPO-Positive,
    Pal et al. 2024) charges every rise of the winner's error above the reference's.
    Returns (mean loss, implicit accuracy: the fraction of pairs the tuned model already prefers).
    log 2 when model = reference; its gradient vanishes only when winner and loser coincide.
    """
    inside = -0.5 * beta * ((model_w - model_l) - (ref_w - ref_l) + positive * (model_w - ref_w).clamp_min(0.0))
    return -F.logsigmoid(inside).mean(), (inside > 0).float().mean()


def elbo_weights(denoiser: Denoiser, clip_quantile: float = 0.99) -> torch.Tensor:
    """PAPA's ELBO weights w_t = (1 − α_t) / (α_t (1 − ᾱ_{t−1})) per timestep ``[T]``, made finite.

    They are infinite at t = 0 (ᾱ_{−1} = 1) and, with zero-terminal-SNR schedules, at t = T − 1
    (α = 0). We clip at the ``clip_quantile`` of the finite values and normalise to mean 1 so the
    learning rate keeps its meaning across schedules.
    """
    alphas = denoiser.alphas.double()
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), denoiser.alphas_cumprod.double()[:-1]])
    with torch.no_grad():
        w = (1.0 - alphas) / (alphas * (1.0 - ab_prev))
        finite = w[torch.isfinite(w) & (w > 0)]
        cap = torch.quantile(finite, clip_quantile)
        w = torch.where(torch.isfinite(w), w, cap).clamp(max=cap)
    return (w / w.mean()).float()


def papa_loss(
    error: torch.Tensor,
    base_error: torch.Tensor,
    pull: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    c_pref: float = 0.1,
    c_base: float = 0.009,
    unlikelihood_cap: float = 2.0,
    pull_all: bool = True,
) -> torch.Tensor:
    """PAPA's signed, ELBO-weighted denoising loss plus a pull toward the base model (per sample, in ε space).

    ``error`` / ``base_error``: ‖ε̂ − ε‖² of the tuned / base model; ``pull``: ‖ε̂ − ε̂_base‖²;
    ``labels`` +1 like / −1 dislike; ``weights``: w_t of each sample's timestep.
    The unlikelihood term (dislikes) is unbounded below in the paper; here it stops pushing once the
    tuned error reaches ``unlikelihood_cap`` × the base error, and the base pull applies to every sample
    (``pull_all``), so the loss stays bounded.
    """
    liked = labels > 0
    bounded = torch.minimum(error, unlikelihood_cap * base_error.detach())
    preference = torch.where(liked, error, -bounded)
    pull_mask = torch.ones_like(pull) if pull_all else liked.float()
    return (c_pref * weights * preference + c_base * pull * pull_mask).mean()


def reward_tilt(rewards: torch.Tensor, temperature: float, min_ess: float = 1.0) -> torch.Tensor:
    """Sampling probabilities ∝ exp(r / τ) over a pool of samples ``[B]``, τ = ``temperature`` × the rewards'
    standard deviation (a reward's scale is arbitrary), raised as far as needed for an effective sample size of
    at least ``min_ess`` (at most ``B / 2``: a floor of the whole pool would leave no tilt).

    Drawing training batches from the pool with these probabilities and denoising them unweighted fits
    p_pool(x)·exp(r(x)/τ) exactly; weighting a uniformly drawn batch by a softmax over that batch instead
    trains on whatever the batch holds (often no liked sample at all) at full weight. The floor on the
    effective sample size keeps a reward that singles out a few samples (an unsure one, fitted on noisy
    answers) from training the model on those few alone: it would lose the variety of everything else.

    ``rewards`` ``[S, B]``: S posterior draws of the reward. The result is the mixture of each draw's tilt (τ
    from that draw's standard deviation): where the answers pin the reward down, the draws agree and the tilt
    is as sharp as one; where they do not (two liked digits the person always called a tie), the draws
    disagree and the mixture keeps both near their base share instead of amplifying the point estimate's
    noise. Constant rewards give the untilted pool.
    """
    rewards = rewards.double()
    if rewards.ndim == 2:
        return torch.stack([reward_tilt(r, temperature, min_ess) for r in rewards]).mean(0)
    spread = float(rewards.std()) if len(rewards) > 1 else 0.0
    if spread <= 1e-9:
        return torch.full(rewards.shape, 1.0 / len(rewards))
    temperature, min_ess = temperature * spread, min(min_ess, len(rewards) / 2)

    def tilt(tau: float) -> torch.Tensor:
        return torch.softmax(rewards / tau, dim=0)

    probabilities = tilt(temperature)
    if effective_sample_size(probabilities) < min_ess:
        low, high = temperature, temperature
        while effective_sample_size(tilt(high)) < min_ess and high < 1e6 * temperature:
            high *= 2.0
        for _ in range(40):  # the effective sample size grows with τ: bisect for the smallest τ that reaches it
            middle = (low + high) / 2
            low, high = (middle, high) if effective_sample_size(tilt(middle)) < min_ess else (low, middle)
        probabilities = tilt(high)
    return probabilities.float()


def effective_sample_size(probabilities: torch.Tensor) -> float:
    """Kish's effective number of samples of a weighting: 1 / Σ p² (between 1 and the pool size)."""
    return float(1.0 / probabilities.double().pow(2).sum())
