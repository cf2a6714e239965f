"""PAPA and EPAPA (arXiv 2607.00486) as their code runs them (``tools/train_papa.py`` and the configs of
github.com/NasikNafi/papa): the peer of the real-data alignment benchmark, in PAPA's own setting.

Each round samples ``per_round`` images from the current model (EPAPA: the tuned model at forward timesteps
t >= k, the base model below), the simulated person labels each like (+1) or dislike (−1), then every image in
turn takes one Adam step (batch size 1). Their script runs on R = 8 GPUs (``scripts/run_training_frontier.sh``:
8 tasks, ``SLURM_NTASKS`` ranks): rank r sums the preference term over its slice of R equal slices of [k, T) and
adds the base pull at the last timestep of its slice, t_r; DDP then averages the R ranks' gradients. So one step
descends

    loss = label · c_pref · (1/R) Σ_t w_t ‖ε_θ(x_t, t) − ε‖²  +  [liked] · c_base · (1/R) Σ_r ‖ε_θ(x_t_r, t_r) − ε_base(x_t_r, t_r)‖²

with one noise ε per image shared by every t, t over [k, T) (k = 0 for PAPA, 400 for EPAPA), w_t =
(1 − α_t) / (α_t (1 − ᾱ_{t−1})) unnormalised and unclipped (at t = 0 their index t − 1 wraps to ᾱ_{T−1}; so here), the
dislike term unbounded, c_pref = 0.1, c_base = 0.009, Adam at 1e-5 on every weight of the UNet (full fine-tuning), or
on a LoRA only (``trainable="lora"``). (Read as one process, their script would give a preference term R times
larger against a pull at t = T − 1 only; under Adam only that ratio matters, and it decides whether dislikes run
away: ``docs/benchmarks.md``.)

Where this differs from their code, and why:
- the sum over t is estimated from ``timesteps_per_image`` timesteps drawn without replacement and scaled by
  (T − k) / n (unbiased; ``timesteps_per_image=None`` sums all T − k, exactly as they do, 1,000 UNet passes per
  image, too slow for a CPU);
- images are sampled with PAPA's ancestral DDPM sampler at 50 of the 1,000 steps (the embedded model's default,
  the same for every method) instead of all 1,000, checked against 1,000 steps in ``docs/benchmarks.md``;
- the person's labels come from the benchmark's simulated person (the classifier; an image it cannot read is
  disliked) instead of the bare argmax of their classifier.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ...learning.answers import DISLIKE, LIKE
from ...tuning.adapters import add_adapter, trainable_parameters
from ...tuning.denoiser import Denoiser
from ...tuning.drift import DriftMonitor
from ...tuning.sampling import adapter_mode, sample_images


def papa_elbo_weights(denoiser: Denoiser) -> torch.Tensor:
    """w_t = (1 − α_t) / (α_t (1 − ᾱ_{t−1})) per timestep ``[T]``, with ᾱ_{−1} read as ᾱ_{T−1} (their indexing)."""
    alphas = denoiser.alphas.double()
    previous = torch.roll(denoiser.alphas_cumprod.double(), 1)
    return ((1.0 - alphas) / (alphas * (1.0 - previous))).float()


class _WeightsGate:
    """Full fine-tuning's EPAPA: while sampling, the UNet runs the tuned weights at t >= ``k`` and the base weights
    below (a forward pre-hook copies the right set in when the timestep crosses ``k``); the tuned weights are back
    in place on exit."""

    def __init__(self, unet, base, k: int):
        self.unet, self.k = unet, k
        self.params = list(unet.parameters())
        self.tuned = [p.detach().clone() for p in self.params]
        self.base = [p.detach() for p in base.parameters()]
        self.current = "tuned"

    def _hook(self, module, args, kwargs):
        t = float(torch.as_tensor(kwargs.get("timestep", args[1] if len(args) > 1 else None)).flatten()[0])
        wanted = "tuned" if t >= self.k else "base"
        if wanted != self.current:
            with torch.no_grad():
                torch._foreach_copy_(self.params, self.tuned if wanted == "tuned" else self.base)
            self.current = wanted

    def __enter__(self):
        self.handle = self.unet.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()
        with torch.no_grad():
            torch._foreach_copy_(self.params, self.tuned)


class PapaPeer:
    """PAPA's loop on ``pipe`` (its UNet is trained in place; the base is kept as a frozen copy).

    Args:
        trainable: ``"full"`` (every UNet weight, as PAPA does) or ``"lora"`` (a rank-``rank`` adapter).
        epapa_k: 0 for PAPA; 400 for EPAPA (the tuned model acts and trains only at t >= 400 of 1,000).
        timesteps_per_image: timesteps per image estimating their sum over t (``None``: all of them).
        ranks: the data-parallel ranks their script runs on (8); 1 reads it as a single process.
    """

    def __init__(
        self,
        pipe,
        trainable: str = "full",
        learning_rate: float = 1e-5,
        epapa_k: int = 0,
        c_pref: float = 0.1,
        c_base: float = 0.009,
        ranks: int = 8,
        timesteps_per_image: int | None = 100,
        rank: int = 4,
        seed: int = 0,
    ):
        if trainable not in ("full", "lora"):
            raise ValueError(f"trainable must be 'full' or 'lora', got {trainable!r}")
        self.pipe, self.trainable = pipe, trainable
        self.denoiser = Denoiser(pipe)
        self.T = self.denoiser.num_train_timesteps
        if not 0 <= epapa_k < self.T:
            raise ValueError(f"epapa_k must be in [0, {self.T}), got {epapa_k}")
        if timesteps_per_image is not None and not 1 <= timesteps_per_image <= self.T - epapa_k:
            raise ValueError(f"timesteps_per_image must be in [1, {self.T - epapa_k}] or None")
        if ranks < 1 or (self.T - epapa_k) % ranks:
            raise ValueError(f"ranks must divide the {self.T - epapa_k} tuned timesteps (their assert), got {ranks}")
        self.k, self.c_pref, self.c_base, self.n_t, self.ranks = epapa_k, c_pref, c_base, timesteps_per_image, ranks
        slice_ = (self.T - epapa_k) // ranks
        self.pull_timesteps = epapa_k + slice_ * torch.arange(1, ranks + 1) - 1  # each rank's last t [R]
        self.weights = papa_elbo_weights(self.denoiser)
        self.generator = torch.Generator().manual_seed(seed)
        unet = pipe.unet
        if trainable == "full":
            self.base = copy.deepcopy(unet).eval().requires_grad_(False)
            params = list(unet.parameters())
        else:
            add_adapter(unet, rank=rank, seed=seed)
            params = trainable_parameters(unet)
            self.base = None
        self.optimizer = torch.optim.Adam(params, lr=learning_rate)
        # anchors built now, before any step: their predictions are the base model's
        self._drift = DriftMonitor(self.denoiser, lambda prompts, seed: self._base_images(len(prompts), seed), [""])
        self._drift.measure()

    def drift(self) -> float:
        """The loop's drift measure (:class:`~edpbrl_plugin.tuning.drift.DriftMonitor`), for the same report."""
        return self._drift.measure()

    def _gate(self):
        if self.trainable == "lora":
            return contextlib.nullcontext()  # the package sampler gates the adapter itself (min_timestep)
        return _WeightsGate(self.pipe.unet, self.base, self.k) if self.k > 0 else contextlib.nullcontext()

    def _base_images(self, n: int, seed: int) -> np.ndarray:
        return sample_images(self.pipe, [""] * n, range(seed, seed + n), adapters=False)

    def images(self, n: int, seed: int, steps: int | None = None) -> np.ndarray:
        """``n`` images of the current model (seeds ``seed ..``), EPAPA-gated, with the pipeline's sampler at
        ``steps`` (``None``: its default)."""
        with self._gate():
            return sample_images(
                self.pipe,
                [""] * n,
                range(seed, seed + n),
                num_inference_steps=steps,
                min_timestep=self.k if self.trainable == "lora" else 0,
            )

    def _base_prediction(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.base is not None:
                return self.base(x_t, t).sample
            with adapter_mode(self.pipe.unet, adapters=False):
                return self.pipe.unet(x_t, t).sample

    def step(self, image: np.ndarray, label: float) -> float:
        """One Adam step on one image ``[H, W, 3]`` labelled +1 / −1; returns the loss."""
        unet = self.pipe.unet
        unet.train()
        x0 = self.denoiser.encode_images(image[None])
        noise = torch.randn(x0.shape, generator=self.generator)
        span = torch.arange(self.k, self.T)
        if self.n_t is None:
            t, scale = span, 1.0
        else:
            t, scale = span[torch.randperm(len(span), generator=self.generator)[: self.n_t]], len(span) / self.n_t
        x_t = self.denoiser.add_noise(x0.expand(len(t), -1, -1, -1), noise.expand(len(t), -1, -1, -1), t)
        error = (unet(x_t, t).sample - noise).pow(2).mean(dim=(1, 2, 3))
        loss = label * self.c_pref * scale / self.ranks * (self.weights[t] * error).sum()
        if label > 0 and self.c_base > 0:
            pull = self.pull_timesteps
            x_pull = self.denoiser.add_noise(
                x0.expand(len(pull), -1, -1, -1), noise.expand(len(pull), -1, -1, -1), pull
            )
            gap = (unet(x_pull, pull).sample - self._base_prediction(x_pull, pull)).pow(2).mean(dim=(1, 2, 3))
            loss = loss + self.c_base * gap.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        unet.eval()
        return float(loss.detach())

    def round(self, rate: Callable[[np.ndarray], Sequence[str]], n: int, seed: int) -> dict:
        """Sample ``n`` images, have ``rate`` label them like / dislike, then one step per image in order."""
        images = self.images(n, seed)
        labels = list(rate(images))
        if len(labels) != n or any(label not in (LIKE, DISLIKE) for label in labels):
            raise ValueError(f"rate must return one of {LIKE!r} / {DISLIKE!r} per image, got {labels}")
        losses = [self.step(image, 1.0 if label == LIKE else -1.0) for image, label in zip(images, labels)]
        return {"liked": sum(label == LIKE for label in labels), "loss": float(np.mean(losses))}
