"""The embedded text-to-image pipeline: a 32x32 pixel-space ``UNet2DConditionModel`` over attribute prompts.

It is a real ``DiffusionPipeline`` (``save_pretrained`` / ``from_pretrained``, the standard LoRA paths
through the UNet's ``PeftAdapterMixin``), small enough to sample and fine-tune on two CPU cores.
The scheduler is v-prediction with zero-terminal-SNR betas and trailing timesteps, so pure black and
white backgrounds are reachable (epsilon prediction never produced them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, ImagePipelineOutput, UNet2DConditionModel
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from .shapes import ATTRIBUTES, IMAGE_SIZE
from .text_encoder import AttributeTextEncoder

DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 2.0


def build_unet() -> UNet2DConditionModel:
    """The embedded UNet architecture (~1.4 M parameters), randomly initialised."""
    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=8,
        # Pools the prompt tokens into the time embedding: global conditioning for colours and backgrounds.
        addition_embed_type="text",
        addition_embed_type_num_heads=4,
    )


def build_scheduler() -> DDIMScheduler:
    """v-prediction, zero terminal SNR, trailing spacing; also used (its betas) for training."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        clip_sample=True,
        set_alpha_to_one=True,
    )


class ShapesPipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin):
    """Text-to-image over the styled-shapes vocabulary ("blue star outline navy").

    LoRA adapters load and save through diffusers' standard loader (``load_lora_weights``,
    ``save_lora_weights``, ``set_adapters``, ``fuse_lora``); only the UNet takes adapters.
    A plain diffusers pipeline: ``edpbrl_plugin.tuning(pipe)`` adds questions, answers and online
    LoRA updates to it exactly as to any other pipeline.

    Args:
        unet: pixel-space ``UNet2DConditionModel`` predicting v.
        text_encoder: :class:`AttributeTextEncoder`.
        scheduler: a diffusers scheduler configured like :func:`build_scheduler`.
    """

    model_cpu_offload_seq = "text_encoder->unet"
    _lora_loadable_modules = ["unet"]
    _callback_tensor_inputs = ["latents"]

    def __init__(self, unet: UNet2DConditionModel, text_encoder: AttributeTextEncoder, scheduler: DDIMScheduler):
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, scheduler=scheduler)

    @property
    def vocabulary(self) -> dict[str, list[str]]:
        return dict(self.text_encoder.config.attributes or ATTRIBUTES)

    def encode_prompt(self, prompt: Sequence[str], strict: bool = True) -> torch.Tensor:
        """Prompt embeddings ``[B, n_attributes, hidden]`` on the UNet's device."""
        ids = self.text_encoder.tokenize(prompt, strict=strict)
        return self.text_encoder(ids.to(self.device)).to(self.unet.dtype)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str] = "",
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        guidance_rescale: float = 0.0,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        strict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> ImagePipelineOutput | tuple:
        """Sample images.

        ``output_type``: ``"pil"`` (list of PIL images), ``"np"`` (``[B, H, W, C]`` float 0..1) or
        ``"pt"`` (``[B, C, H, W]`` float 0..1). ``guidance_scale`` <= 1 disables classifier-free guidance.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ValueError("prompt must be a string or a non-empty list of strings")
        if num_images_per_prompt < 1 or num_inference_steps < 1:
            raise ValueError("num_images_per_prompt and num_inference_steps must be >= 1")
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs must be among {self._callback_tensor_inputs}")
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        batch = len(prompts)
        cond = self.encode_prompt(prompts, strict=strict)
        # Classifier-free guidance only where a prompt says something: an empty prompt's conditional pass is its
        # unconditional pass, so the guided prediction of that row is the plain one (unconditional batches at half
        # the cost, same images).
        guided = [i for i, p in enumerate(prompts) if p.strip()] if guidance_scale > 1.0 else []
        if guided:
            cond = torch.cat([cond, self.encode_prompt([""] * len(guided))])

        shape = (batch, self.unet.config.in_channels, self.unet.config.sample_size, self.unet.config.sample_size)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=self.device, dtype=self.unet.dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        latents = latents * self.scheduler.init_noise_sigma

        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            model_in = self.scheduler.scale_model_input(torch.cat([latents, latents[guided]]) if guided else latents, t)
            pred = self.unet(model_in, t, encoder_hidden_states=cond).sample
            if guided:
                pred, uncond = pred[:batch], pred[batch:]
                text = pred[guided]
                mixed = uncond + guidance_scale * (text - uncond)
                if guidance_rescale > 0:
                    std_ratio = text.std(dim=(1, 2, 3), keepdim=True) / mixed.std(dim=(1, 2, 3), keepdim=True)
                    mixed = guidance_rescale * mixed * std_ratio + (1 - guidance_rescale) * mixed
                pred = pred.index_copy(0, torch.tensor(guided, device=pred.device), mixed)
            latents = self.scheduler.step(pred, t, latents).prev_sample
            if callback_on_step_end is not None:
                outputs = callback_on_step_end(self, i, t, {"latents": latents})
                latents = outputs.pop("latents", latents)

        images = (latents / 2 + 0.5).clamp(0, 1).float()
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
