"""Drift from the base model: how much the tuned denoiser disagrees with the base on anchor inputs.

Anchors are base-model samples for prompts the user did not judge, noised at fixed timesteps with
fixed noise; drift = E‖f_tuned − f_base‖² / E‖f_base‖² (0 = unchanged). Two UNet passes per check, so
it is reported after every update and can cap one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .adapters import adapters_disabled
from .denoiser import Denoiser
from .sampling import cycle


class DriftMonitor:
    def __init__(
        self,
        denoiser: Denoiser,
        sample_base: Callable[[list[str], int], object],
        prompts: Sequence[str],
        n_anchors: int = 8,
        seed: int = 1234,
    ):
        self.denoiser = denoiser
        self._sample_base = sample_base
        self.prompts = list(prompts) or [""]
        self.n_anchors = n_anchors
        self.seed = seed
        self._anchors: tuple | None = None

    def _build(self) -> tuple:
        prompts = cycle(self.prompts, self.n_anchors)
        with adapters_disabled(self.denoiser.unet):
            images = self._sample_base(prompts, self.seed)
        x0 = self.denoiser.encode_images(images)
        gen = torch.Generator().manual_seed(self.seed)
        noise = torch.randn(x0.shape, generator=gen).to(x0)
        t = torch.linspace(0, self.denoiser.num_train_timesteps - 1, self.n_anchors).long().to(x0.device)
        x_t = self.denoiser.add_noise(x0, noise, t)
        condition = self.denoiser.condition(prompts)
        with torch.no_grad(), adapters_disabled(self.denoiser.unet):
            base = self.denoiser.predict(x_t, t, condition).float()
        return x_t, t, condition, base

    @torch.no_grad()
    def measure(self) -> float:
        if self._anchors is None:
            self._anchors = self._build()
        x_t, t, condition, base = self._anchors
        tuned = self.denoiser.predict(x_t, t, condition).float()
        return float((tuned - base).pow(2).mean() / base.pow(2).mean().clamp_min(1e-12))
