"""D3PO (Yang et al., CVPR 2024, arXiv 2311.13231), as its code runs it (``scripts/train.py`` and
``config/base.py`` of github.com/yk7333/d3po): the baseline PAPA compares against, fine-tuning from pairwise
human preferences with no reward model.

Each round samples ``2n`` images in pairs with the stochastic sampler, keeping every step's latent; the simulated
person answers each pair (one action; a tie, skip or "both bad" trains nothing, as D3PO skips equal preferences).
For each answered pair the denoising chain is a sequence of Gaussian policy steps π(x_{i+1} | x_i), and every
stochastic step i (in random order) adds

    −log σ(β · (log clip(r_w,i) − log clip(r_l,i))),   r_·,i = π_θ(x_{i+1} | x_i) / π_ref(x_{i+1} | x_i)

with π_ref the frozen starting model, the ratio clipped to [1 − ε, 1 + ε], the log-probability averaged over
pixels; the gradients of all steps are accumulated (averaged) into one AdamW step per pair, with the gradient
norm clipped to 1. Their settings: β = 0.1, ε = 0.1, learning rate 3e-5, weight decay 1e-4, a LoRA.

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


def transition(scheduler, eps: torch.Tensor, t: int, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Mean ``[B, C, H, W]`` and standard deviation of the ancestral step from ``x`` at timestep ``t``, given
    the predicted noise ``eps``: the Gaussian that ``DDPMScheduler.step`` samples (ε-prediction, x₀ clipped when
    the scheduler clips, "fixed_small" variance)."""
    prev = int(scheduler.previous_timestep(t))
    a_t = scheduler.alphas_cumprod[t]
    a_prev = scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.one
    beta = 1.0 - a_t / a_prev
    x0 = (x - (1.0 - a_t).sqrt() * eps) / a_t.sqrt()
    if scheduler.config.clip_sample:
        x0 = x0.clamp(-scheduler.config.clip_sample_range, scheduler.config.clip_sample_range)
    mean = (a_prev.sqrt() * beta / (1.0 - a_t)) * x0 + ((1.0 - beta).sqrt() * (1.0 - a_prev) / (1.0 - a_t)) * x
    variance = ((1.0 - a_prev) / (1.0 - a_t) * beta).clamp_min(1e-20) if prev >= 0 else torch.zeros(())
    return mean, float(variance.sqrt())


def log_prob(mean: torch.Tensor, std: float, x_next: torch.Tensor) -> torch.Tensor:
    """Gaussian log-density of ``x_next`` per image ``[B]``, averaged over pixels (as D3PO and DDPO do)."""
    return (-((x_next - mean) ** 2) / (2 * std**2) - np.log(std) - 0.5 * np.log(2 * np.pi)).mean(dim=(1, 2, 3))


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
        self.generator = torch.Generator().manual_seed(seed)
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
        """One AdamW step on one answered pair: chains ``[S + 1, C, H, W]`` each; returns the mean loss."""
        unet, scheduler = self.pipe.unet, self.pipe.scheduler
        unet.train()
        chains = torch.stack([winner, loser])  # [2, S + 1, C, H, W]
        stochastic = [i for i, t in enumerate(timesteps.tolist()) if scheduler.previous_timestep(t) >= 0]  # not x₀'s
        order = torch.randperm(len(stochastic), generator=self.generator).tolist()
        self.optimizer.zero_grad(set_to_none=True)
        losses = []
        for j in order:
            i = stochastic[j]
            t = int(timesteps[i])
            x, x_next = chains[:, i], chains[:, i + 1]
            t_batch = torch.full((2,), t)
            mean, std = transition(scheduler, unet(x, t_batch).sample, t, x)
            ref_mean, _ = transition(scheduler, self._reference_eps(x, t_batch), t, x)
            log_ratio = log_prob(mean, std, x_next) - log_prob(ref_mean, std, x_next)
            ratio = log_ratio.exp().clamp(1 - self.clip, 1 + self.clip).log()  # [winner, loser]
            loss = -F.logsigmoid(self.beta * (ratio[0] - ratio[1]))
            (loss / len(order)).backward()
            losses.append(float(loss.detach()))
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        unet.eval()
        return float(np.mean(losses))

    def round(self, answer: Callable[[np.ndarray], int | str], n: int, seed: int) -> dict:
        """Sample ``n`` pairs, have ``answer`` pick one of each (an index, or tie / skip / both bad), then one step
        per pair with a winner."""
        images, chains, timesteps = self.trajectories(2 * n, seed)
        answers = [answer(images[2 * q : 2 * q + 2]) for q in range(n)]
        losses = [
            self.step(chains[2 * q + a], chains[2 * q + 1 - a], timesteps) for q, a in enumerate(answers) if a in (0, 1)
        ]
        return {"answered": len(losses), "loss": float(np.mean(losses)) if losses else None}
