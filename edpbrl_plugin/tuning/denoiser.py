"""A pipeline's denoiser seen from training: encode images and prompts, add noise, predict, compare.

One object hides the differences between the embedded pixel-space pipelines (the text-to-image shapes model,
and the unconditional grayscale digits / fashion models: no prompt, one channel), Stable Diffusion (latents from
the VAE, CLIP text states) and SDXL (two text encoders, pooled embeddings and time ids), so every loss in
:mod:`losses` is written once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class Denoiser:
    """Training-time view of ``pipe.unet`` with the pipeline's noise schedule and prediction type."""

    def __init__(self, pipe):
        unet = getattr(pipe, "unet", None)
        if unet is None:
            raise ValueError(f"{type(pipe).__name__} has no `unet`; personalization needs a UNet pipeline")
        self.pipe = pipe
        self.unet = unet
        config = pipe.scheduler.config
        betas = pipe.scheduler.betas.double()
        self.alphas = (1.0 - betas).float()
        self.alphas_cumprod = pipe.scheduler.alphas_cumprod.float()
        self.num_train_timesteps = int(config.num_train_timesteps)
        self.prediction_type = config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction type {self.prediction_type!r} is not supported (epsilon or v_prediction)")
        self.latent = getattr(pipe, "vae", None) is not None
        self.sdxl = getattr(pipe, "text_encoder_2", None) is not None
        self.unconditional = not hasattr(pipe, "encode_prompt")

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @torch.no_grad()
    def encode_images(self, images) -> torch.Tensor:
        """x0 for images ``[B, H, W, C]`` in 0..1 (pixels in [-1, 1], or scaled VAE latents)."""
        x = torch.as_tensor(np.asarray(images), dtype=torch.float32)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"images must be [B, H, W, 3] in 0..1, got {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2).to(self.device) * 2.0 - 1.0
        if not self.latent:
            expected = self.unet.config.sample_size
            if x.shape[-1] != expected:
                raise ValueError(f"images are {x.shape[-1]} px but this pixel-space UNet works at {expected} px")
            if self.unet.config.in_channels == 1:  # grayscale models return their channel repeated as RGB
                x = x.mean(dim=1, keepdim=True)
            return x.to(self.dtype)
        vae = self.pipe.vae
        latents = vae.encode(x.to(vae.dtype)).latent_dist.mean
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return ((latents - shift) * vae.config.scaling_factor).to(self.dtype)

    @torch.no_grad()
    def condition(self, prompts: Sequence[str]) -> dict:
        """UNet keyword arguments (text states, SDXL's added conditions) for each prompt; none for an
        unconditional pipeline, which has only the empty prompt."""
        prompts = list(prompts)
        if self.unconditional:
            if any(p.strip() for p in prompts):
                raise ValueError(f"{type(self.pipe).__name__} is unconditional: it takes no prompt")
            return {}
        if not self.latent:
            return {"encoder_hidden_states": self.pipe.encode_prompt(prompts)}
        if not self.sdxl:
            embeds, _ = self.pipe.encode_prompt(prompts, self.device, 1, False)
            return {"encoder_hidden_states": embeds}
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        size = self.unet.config.sample_size * self.pipe.vae_scale_factor
        time_ids = (
            self.pipe._get_add_time_ids(
                (size, size),
                (0, 0),
                (size, size),
                dtype=embeds.dtype,
                text_encoder_projection_dim=self.pipe.text_encoder_2.config.projection_dim,
            )
            .to(self.device)
            .repeat(len(prompts), 1)
        )
        return {"encoder_hidden_states": embeds, "added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}

    def _coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ab = self.alphas_cumprod.to(t.device)[t].view(-1, 1, 1, 1)
        return ab.sqrt(), (1.0 - ab).sqrt()

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = self._coefficients(t)
        return (a * x0 + s * noise).to(x0.dtype)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the UNet predicts: ε, or v = √ᾱ ε − √(1−ᾱ) x0."""
        if self.prediction_type == "epsilon":
            return noise
        a, s = self._coefficients(t)
        return a * noise - s * x0

    def to_epsilon(self, prediction: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε̂ from the UNet output (for v: ε̂ = √(1−ᾱ) x_t + √ᾱ v̂)."""
        if self.prediction_type == "epsilon":
            return prediction
        a, s = self._coefficients(t)
        return s * x_t + a * prediction

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, condition: dict) -> torch.Tensor:
        return self.unet(x_t, t, **condition).sample

    def sample_timesteps(self, n: int, generator: torch.Generator, low: int = 0) -> torch.Tensor:
        """Uniform training timesteps in [low, T)."""
        return torch.randint(low, self.num_train_timesteps, (n,), generator=generator).to(self.device)


def repeat_condition(condition: dict, index: torch.Tensor | list[int]) -> dict:
    """Select / repeat the rows of a condition dict (text states, SDXL extras) by batch index."""
    index = torch.as_tensor(index, dtype=torch.long)
    out = {}
    for key, value in condition.items():
        if isinstance(value, dict):
            out[key] = repeat_condition(value, index)
        else:
            out[key] = value[index.to(value.device)]
    return out


def concat_conditions(first: dict, second: dict) -> dict:
    out = {}
    for key, value in first.items():
        out[key] = concat_conditions(value, second[key]) if isinstance(value, dict) else torch.cat([value, second[key]])
    return out
