"""The embedded unconditional pipelines of PAPA's setting: a 28x28 grayscale DDPM (``digits``: MNIST,
``fashion``: Fashion-MNIST).

The denoiser is diffusers' own ``UNet2DModel`` with the standard ``PeftAdapterMixin`` added (``UNet2DModel``
lacks it), so LoRA adapters load, save and switch through the same diffusers paths as on the shapes model and
Stable Diffusion. Training uses PAPA's noise schedule (DDPM, 1,000 linear betas from 1e-4 to 0.02, ε-prediction);
sampling is PAPA's ancestral DDPM sampler over the same betas, at 50 of the 1,000 steps by default
(``num_inference_steps=1000`` gives PAPA's exact sampler). Deterministic DDIM is not used here: on this model it
draws busy, smeared textures even from the base, and it amplifies small changes of the predicted noise at the
noisiest steps, so a model tuned by a few of PAPA's dislike steps washes out to white under DDIM while it samples
cleanly with the ancestral sampler it was trained for (``docs/benchmarks.md``, "Which sampler"). Images come out white on black like the data, as RGB (the gray channel repeated) so every
image of the package has one shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.loaders import PeftAdapterMixin, StableDiffusionLoraLoaderMixin
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  from_pretrained finds DigitsUNet's loader by this name here
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from .data import IMAGE_SIZE

DEFAULT_STEPS = 50


class DigitsUNet(UNet2DModel, PeftAdapterMixin):
    """``UNet2DModel`` that takes PEFT adapters (``add_adapter``, ``load_lora_adapter``, ``set_adapters``)."""


def build_unet() -> DigitsUNet:
    """The embedded 28x28 grayscale UNet (about 1.7 M parameters), randomly initialised."""
    return DigitsUNet(
        sample_size=IMAGE_SIZE,
        in_channels=1,
        out_channels=1,
        block_out_channels=(32, 64, 64),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        attention_head_dim=16,
        norm_num_groups=8,
    )


def build_scheduler() -> DDPMScheduler:
    """PAPA's DDPM (linear betas 1e-4..0.02 over 1,000 steps, ε-prediction, x₀ clipped), sampled ancestrally."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule="linear",
        prediction_type="epsilon",
        clip_sample=True,
        timestep_spacing="leading",
    )


class DigitsPipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin):
    """Unconditional 28x28 image generation. ``prompt`` is accepted only as empty strings (one per image), so the
    package's one seeded sampler and the loop drive it like a text-to-image pipeline with nothing to say.

    Args:
        unet: :class:`DigitsUNet` predicting ε on ``[B, 1, 28, 28]``.
        scheduler: a diffusers scheduler configured like :func:`build_scheduler`.
    """

    model_cpu_offload_seq = "unet"
    _lora_loadable_modules = ["unet"]
    _callback_tensor_inputs = ["latents"]
    #: No text encoder: diffusers' LoRA loader looks for one and, finding None, loads only the UNet's adapter.
    text_encoder = None

    def __init__(self, unet: DigitsUNet, scheduler: DDPMScheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str] = "",
        batch_size: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = DEFAULT_STEPS,
        eta: float = 0.0,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        guidance_scale: float | None = None,
    ) -> ImagePipelineOutput | tuple:
        """Sample ``batch_size`` images (default: one per prompt).

        ``output_type``: ``"pil"``, ``"np"`` (``[B, 28, 28, 3]`` float 0..1) or ``"pt"`` (``[B, 3, 28, 28]``).
        ``guidance_scale`` is accepted and ignored (there is no condition to guide toward); ``eta`` applies only
        when a ``DDIMScheduler`` is swapped in.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if any(p.strip() for p in prompts):
            raise ValueError(
                "this model is unconditional: it takes no prompt (pass empty prompts, or none); "
                f"got {next(p for p in prompts if p.strip())!r}"
            )
        batch = batch_size if batch_size is not None else max(1, len(prompts))
        if batch < 1 or num_inference_steps < 1:
            raise ValueError("batch_size and num_inference_steps must be >= 1")
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs must be among {self._callback_tensor_inputs}")
        size = self.unet.config.sample_size
        shape = (batch, self.unet.config.in_channels, size, size)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=self.device, dtype=self.unet.dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        latents = latents * self.scheduler.init_noise_sigma

        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        step_kwargs = {"eta": eta} if isinstance(self.scheduler, DDIMScheduler) else {}
        step_kwargs["generator"] = generator
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            pred = self.unet(self.scheduler.scale_model_input(latents, t), t).sample
            latents = self.scheduler.step(pred, t, latents, **step_kwargs).prev_sample
            if callback_on_step_end is not None:
                outputs = callback_on_step_end(self, i, t, {"latents": latents})
                latents = outputs.pop("latents", latents)

        images = (latents / 2 + 0.5).clamp(0, 1).float().repeat(1, 3, 1, 1)
        if output_type == "pt":
            result = images
        else:
            result = images.permute(0, 2, 3, 1).cpu().numpy()
            if output_type == "pil":
                result = [Image.fromarray(np.round(im * 255).astype(np.uint8)) for im in result]
        self.maybe_free_model_hooks()
        if not return_dict:
            return (result,)
        return ImagePipelineOutput(images=result)
