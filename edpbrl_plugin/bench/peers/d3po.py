"""D3PO (Yang et al., CVPR 2024, arXiv 2311.13231), as its code runs it (``scripts/train.py`` and
``config/base.py`` of github.com/yk7333/d3po): the baseline PAPA compares against, fine-tuning from pairwise
human preferences with no reward model.

Each round samples ``2n`` images in pairs with the stochastic sampler, keeping every step's latent; the simulated
person answers each pair (one action; a tie, skip or "both bad" trains nothing, as D3PO skips equal preferences).
For each answered pair the denoising chain is a sequence of Gaussian policy steps π(x_{i+1} | x_i), and every
stochastic step i adds

    −log σ(β · (log clip(r_w,i) − log clip(r_l,i))),   r_·,i = π_θ(x_{i+1} | x_i) / π_ref(x_{i+1} | x_i)

with π_ref the frozen starting model, the ratio clipped to [1 − ε, 1 + ε], the log-probability averaged over
pixels; the gradients of all steps are accumulated (averaged) into one AdamW step per pair, with the gradient
norm clipped to 1 (their code back-propagates step by step in random order; here all steps are one batch, the
same gradient). Their settings: β = 0.1, ε = 0.1, learning rate 3e-5, weight decay 1e-4, a LoRA.

Where this differs from their code, and why:
- the sampler is the embedded model's own (PAPA's ancestral DDPM at 50 steps), where theirs is DDIM with η = 1
  at 20 steps: the same Gaussian steps (DDIM with η = 1 has the DDPM posterior's variance);
- images are unconditional and unguided (the real-data models have no prompts), so their classifier-free
  guidance in training falls away;
- pairs are two fresh samples asked as one A/B question, where their people sort a batch per prompt.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

from ...tuning.adapters import add_adapter, trainable_parameters
from ...tuning.denoiser import Denoiser
from ...tuning.drift import DriftMonitor
from ...tuning.sampling import adapter_mode, sample_images


def transition(scheduler, eps: torch.Tensor, t, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[B, C, H, W]`` and standard deviation ``[B or 1, 1, 1, 1]`` of the ancestral step from ``x`` at
    timestep ``t`` (one, or ``[B]``, one per image), given the predicted noise ``eps``: the Gaussian that
    ``DDPMScheduler.step`` samples (ε-prediction, x₀ clipped when the scheduler clips, "fixed_small" variance;
    zero spread on the last step, which is deterministic)."""
    t = torch.as_tensor(t).reshape(-1)
    prev = torch.tensor([int(scheduler.previous_timestep(int(s))) for s in t])
    a_t = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    a_prev = torch.where(prev >= 0, scheduler.alphas_cumprod[prev.clamp_min(0)], scheduler.one).view(-1, 1, 1, 1)
    beta = 1.0 - a_t / a_prev
    x0 = (x - (1.0 - a_t).sqrt() * eps) / a_t.sqrt()
    if scheduler.config.clip_sample:
        x0 = x0.clamp(-scheduler.config.clip_sample_range, scheduler.config.clip_sample_range)
    mean = (a_prev.sqrt() * beta / (1.0 - a_t)) * x0 + ((1.0 - beta).sqrt() * (1.0 - a_prev) / (1.0 - a_t)) * x
    stochastic = (prev >= 0).view(-1, 1, 1, 1)
    variance = torch.where(stochastic, ((1.0 - a_prev) / (1.0 - a_t) * beta).clamp_min(1e-20), 0.0)
    return mean, variance.sqrt()


def log_prob(mean: torch.Tensor, std, x_next: torch.Tensor) -> torch.Tensor:
    """Gaussian log-density of ``x_next`` per image ``[B]``, averaged over pixels (as D3PO and DDPO do); ``std`` a
    number or broadcastable to ``mean``."""
    std = torch.as_tensor(std, dtype=mean.dtype)
    return (-((x_next - mean) ** 2) / (2 * std**2) - std.log() - 0.5 * np.log(2 * np.pi)).mean(dim=(1, 2, 3))


class D3poPeer:
    """D3PO's loop on ``pipe`` (an unconditional pixel-space pipeline with a ``DDPMScheduler``); its UNet gets a
    LoRA (``trainable="lora"``, their default) or is trained whole (``"full"``, a frozen copy kept as π_ref).

    The benchmark sees it as it sees :class:`~.papa.PapaPeer`: ``pipe``, ``k`` (0: no timestep gate),
    ``images``, ``round``, ``drift``.
    """

    def __init__(
        self,
        pipe,
        trainable: str = "lora",
        learning_rate: float = 3e-5,
        beta: float = 0.1,
        clip: float = 0.1,
        weight_decay: float = 1e-4,
        rank: int = 4,
        steps: int = 50,
        seed: int = 0,
    ):
        if trainable not in ("full", "lora"):
            raise ValueError(f"trainable must be 'full' or 'lora', got {trainable!r}")
        self.pipe, self.trainable, self.k = pipe, trainable, 0
        self.beta, self.clip, self.steps = beta, clip, steps
        self.denoiser = Denoiser(pipe)
        unet = pipe.unet
        if trainable == "full":
            self.reference = copy.deepcopy(unet).eval().requires_grad_(False)
            params = list(unet.parameters())
        else:
            add_adapter(unet, rank=rank, seed=seed)
            self.reference = None
            params = trainable_parameters(unet)
        self.params = params
        self.optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
        # anchors built now, before any step: their predictions are the base model's
        self._drift = DriftMonitor(self.denoiser, lambda prompts, seed: self._base_images(len(prompts), seed), [""])
        self._drift.measure()

    def _reference_eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.reference is not None:
                return self.reference(x, t).sample
            with adapter_mode(self.pipe.unet, adapters=False):
                return self.pipe.unet(x, t).sample

    def drift(self) -> float:
        """The loop's drift measure (:class:`~edpbrl_plugin.tuning.drift.DriftMonitor`), for the same report."""
        return self._drift.measure()

    def _base_images(self, n: int, seed: int) -> np.ndarray:
        return sample_images(self.pipe, [""] * n, range(seed, seed + n), adapters=False)

    def images(self, n: int, seed: int, steps: int | None = None) -> np.ndarray:
        """``n`` images of the current model (seeds ``seed ..``) with the pipeline's sampler."""
        return sample_images(self.pipe, [""] * n, range(seed, seed + n), num_inference_steps=steps or self.steps)

    @torch.no_grad()
    def trajectories(self, n: int, seed: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """``n`` samples with their chains: images ``[n, H, W, 3]``, latents ``[n, S + 1, C, H, W]`` (x_T first)
        and timesteps ``[S]``; the same images as :meth:`images` for the same seeds."""
        unet, scheduler = self.pipe.unet, self.pipe.scheduler
        unet.eval()
        scheduler.set_timesteps(self.steps)
        generators = [torch.Generator().manual_seed(s) for s in range(seed, seed + n)]
        size = unet.config.sample_size
        x = randn_tensor((n, unet.config.in_channels, size, size), generator=generators, dtype=unet.dtype)
        chain = [x]
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x, generator=generators).prev_sample
            chain.append(x)
        images = (x / 2 + 0.5).clamp(0, 1).repeat(1, 3, 1, 1).permute(0, 2, 3, 1).numpy()
        return images, torch.stack(chain, dim=1), scheduler.timesteps.clone()

    def step(self, winner: torch.Tensor, loser: torch.Tensor, timesteps: torch.Tensor) -> float:
        """One AdamW step on one answered pair: chains ``[S + 1, C, H, W]`` each; returns the mean loss.

        Their code back-propagates each stochastic step in turn (in random order) and steps once with the
        accumulated mean gradient; here every step of both chains is one batch through the UNet, whose mean
        loss has that same gradient (the weights do not change within a pair), at a fraction of the CPU time."""
        unet, scheduler = self.pipe.unet, self.pipe.scheduler
        unet.train()
        stochastic = torch.tensor([i for i, t in enumerate(timesteps.tolist()) if scheduler.previous_timestep(t) >= 0])
        chains = torch.stack([winner, loser])  # [2, S + 1, C, H, W]
        x, x_next = chains[:, stochastic].flatten(0, 1), chains[:, stochastic + 1].flatten(0, 1)  # winner's, loser's
        t = timesteps[stochastic].repeat(2)
        self.optimizer.zero_grad(set_to_none=True)
        mean, std = transition(scheduler, unet(x, t).sample, t, x)
        ref_mean, _ = transition(scheduler, self._reference_eps(x, t), t, x)
        log_ratio = (log_prob(mean, std, x_next) - log_prob(ref_mean, std, x_next)).view(2, -1)
        ratio = log_ratio.exp().clamp(1 - self.clip, 1 + self.clip).log()  # [winner / loser, step]
        losses = -F.logsigmoid(self.beta * (ratio[0] - ratio[1]))
        losses.mean().backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        unet.eval()
        return float(losses.detach().mean())

    def round(self, answer: Callable[[np.ndarray], int | str], n: int, seed: int) -> dict:
        """Sample ``n`` pairs, have ``answer`` pick one of each (an index, or tie / skip / both bad), then one step
        per pair with a winner."""
        images, chains, timesteps = self.trajectories(2 * n, seed)
        answers = [answer(images[2 * q : 2 * q + 2]) for q in range(n)]
        losses = [
            self.step(chains[2 * q + a], chains[2 * q + 1 - a], timesteps) for q, a in enumerate(answers) if a in (0, 1)
        ]
        return {"answered": len(losses), "loss": float(np.mean(losses)) if losses else None}
