"""The one seeded sampler: image i comes from ``prompts[i]`` and its own ``torch.Generator`` seeded with ``seeds[i]``.

Every image of the package is drawn here (candidates, the distillation pool, reward checks, drift anchors,
evaluation in the demo and the benchmarks), so the same (prompt, seed, steps, guidance) gives the same image
whatever the batch it is drawn in, and the base model evaluated before an update is the very model an
update starts from.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .adapters import TimestepGate, adapters_disabled

#: Images per pipeline call: large batches are slower per image on a CPU and do not fit a GPU at SD sizes.
BATCH_SIZE = 32


def _step_callback(check: Callable[[], None] | None, on_step: Callable[[int, int], None] | None, total: int):
    """A diffusers ``callback_on_step_end`` counting ``total`` denoising steps over every batch of one call
    (``on_step(done, total)``, a host's progress bar) and running the host's cancel ``check`` after each."""
    done = 0

    def callback(pipe, step: int, timestep, tensors: dict) -> dict:
        nonlocal done
        done = min(done + 1, total)
        if on_step is not None:
            on_step(done, total)
        if check is not None:
            check()
        return tensors

    return callback


def adapter_mode(unet, adapters: bool = True, min_timestep: int = 0):
    """The context a sample is drawn in: the base model (``adapters=False``), the adapter only at timesteps
    >= ``min_timestep`` (EPAPA), or the pipeline as it is."""
    if not adapters:
        return adapters_disabled(unet)
    if min_timestep > 0 and getattr(unet, "_hf_peft_config_loaded", False):  # no adapter yet: nothing to gate
        return TimestepGate(unet, min_timestep)
    return contextlib.nullcontext()


@torch.no_grad()
def sample_images(
    pipe,
    prompts: Sequence[str],
    seeds: Sequence[int],
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    size: tuple[int, int] | None = None,
    adapters: bool = True,
    min_timestep: int = 0,
    batch_size: int = BATCH_SIZE,
    on_step: Callable[[int, int], None] | None = None,
    check: Callable[[], None] | None = None,
) -> np.ndarray:
    """Images ``[B, H, W, 3]`` float32 in 0..1, one per (prompt, seed).

    ``None`` steps / guidance use the pipeline's own defaults; ``size`` (height, width) is for latent
    pipelines. ``adapters`` / ``min_timestep``: see :func:`adapter_mode`. The UNet is put in eval mode while
    sampling and back as it was after.
    """
    prompts, seeds = list(prompts), [int(s) for s in seeds]
    if len(prompts) != len(seeds) or not prompts:
        raise ValueError(
            f"need one seed per prompt and at least one image, got {len(prompts)} prompts, {len(seeds)} seeds"
        )
    kwargs = {
        k: v
        for k, v in (("num_inference_steps", num_inference_steps), ("guidance_scale", guidance_scale))
        if v is not None
    }
    if size is not None:
        kwargs.update(height=size[0], width=size[1])
    if on_step is not None or check is not None:
        steps = num_inference_steps or len(getattr(pipe.scheduler, "timesteps", ())) or 1
        kwargs["callback_on_step_end"] = _step_callback(check, on_step, -(-len(prompts) // batch_size) * steps)
    unet = pipe.unet
    was_training = unet.training
    unet.eval()
    try:
        with adapter_mode(unet, adapters, min_timestep):
            chunks = [
                pipe(
                    prompt=prompts[i : i + batch_size],
                    output_type="np",
                    **kwargs,
                    generator=[torch.Generator().manual_seed(s) for s in seeds[i : i + batch_size]],
                ).images
                for i in range(0, len(prompts), batch_size)
            ]
    finally:
        unet.train(was_training)
    return np.concatenate([np.asarray(c, dtype=np.float32) for c in chunks])


def cycle(prompts: Sequence[str], n: int) -> list[str]:
    """``n`` prompts taken from ``prompts`` in turn (the empty prompt when none): how every batch spreads its prompts."""
    prompts = list(prompts) or [""]
    return [prompts[i % len(prompts)] for i in range(n)]
