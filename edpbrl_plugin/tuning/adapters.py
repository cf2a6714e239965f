"""The preference LoRA on a UNet: creation, snapshots, reference (adapter off) passes, EPAPA gating."""

from __future__ import annotations

import contextlib

import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

ADAPTER_NAME = "edpbrl"
ATTENTION_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
RESNET_TARGETS = ["conv1", "conv2"]


def default_targets(unet) -> list[str]:
    """Attention projections; on small UNets (< 10 M parameters) also the ResNet convolutions, since
    attention-only LoRA touches just the lowest resolution of a model that small."""
    n_params = sum(p.numel() for p in unet.parameters())
    return ATTENTION_TARGETS + (RESNET_TARGETS if n_params < 10_000_000 else [])


def has_adapter(unet, name: str = ADAPTER_NAME) -> bool:
    return name in (getattr(unet, "peft_config", None) or {})


def add_adapter(
    unet,
    rank: int = 4,
    alpha: float | None = None,
    targets: list[str] | None = None,
    name: str = ADAPTER_NAME,
    seed: int = 0,
) -> LoraConfig:
    """Add a zero-initialised LoRA (the model is unchanged until trained) and make it active."""
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    config = LoraConfig(
        r=rank,
        lora_alpha=float(alpha if alpha is not None else rank),
        init_lora_weights="gaussian",
        target_modules=targets or default_targets(unet),
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        unet.add_adapter(config, adapter_name=name)
    unet.set_adapter(name)
    return config


def adapter_state(unet, name: str = ADAPTER_NAME) -> dict[str, torch.Tensor]:
    """A detached copy of the adapter's weights (keys without the adapter name)."""
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(unet, adapter_name=name).items()}


def load_adapter_state(unet, state: dict[str, torch.Tensor], name: str = ADAPTER_NAME) -> None:
    result = set_peft_model_state_dict(unet, state, adapter_name=name)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ValueError(f"adapter state does not fit this UNet: unexpected keys {unexpected[:3]}")


def trainable_parameters(unet, name: str = ADAPTER_NAME) -> list[torch.nn.Parameter]:
    params = [p for n, p in unet.named_parameters() if f".{name}." in n and "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    return params


def restart_adapter(unet, name: str = ADAPTER_NAME) -> None:
    """Zero every ``lora_B`` of the adapter: it then adds nothing (the base model), as a freshly added
    adapter does, while ``lora_A`` keeps a non-zero projection so gradients reach ``lora_B``."""
    with torch.no_grad():
        for param_name, param in unet.named_parameters():
            if "lora_B" in param_name and f".{name}." in param_name:
                param.zero_()


@contextlib.contextmanager
def adapters_disabled(unet):
    """The base model (reference) inside the block, with no second copy of the UNet.

    A UNet without any PEFT adapter is already the base model: the block then changes nothing.
    """
    if not getattr(unet, "_hf_peft_config_loaded", False):
        yield
        return
    unet.disable_adapters()
    try:
        yield
    finally:
        unet.enable_adapters()


class TimestepGate:
    """EPAPA: the adapter acts only at forward timesteps t >= ``min_timestep`` (the noisy part).

    A forward pre-hook on the UNet switches the adapter per call, so any pipeline's sampling loop
    uses the tuned model for the early, noisy steps and the base model after. A gated adapter must
    not be fused into the weights. Use as a context manager or call ``remove()``.
    """

    def __init__(self, unet, min_timestep: int):
        self.unet = unet
        self.min_timestep = int(min_timestep)
        self._handle = unet.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        t = torch.as_tensor(t)
        if t.numel() > 1 and not bool((t == t.flatten()[0]).all()):
            raise ValueError("a timestep-gated adapter needs one timestep per UNet call")
        if float(t.flatten()[0]) >= self.min_timestep:
            module.enable_adapters()
        else:
            module.disable_adapters()
        return None

    def remove(self) -> None:
        self._handle.remove()
        self.unet.enable_adapters()

    def __enter__(self) -> TimestepGate:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
