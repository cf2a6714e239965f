"""What the embedded models' training scripts share: an EMA of the weights, a warmup-cosine learning rate and
atomic, resumable checkpoints. Training runs outside CI; CI only loads the shipped weights."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch


class EMA:
    """Exponential moving average of the parameters of ``modules`` (decay ramps up over the first steps)."""

    def __init__(self, modules: list[torch.nn.Module], decay: float):
        self.decay = decay
        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - decay)

    def state_dict(self) -> list[torch.Tensor]:
        return self.shadow

    def load_state_dict(self, shadow: list[torch.Tensor]) -> None:
        self.shadow = [s.clone() for s in shadow]

    @torch.no_grad()
    def copy_to(self) -> None:
        for p, s in zip(self.params, self.shadow):
            p.copy_(s)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine from 1 down to 0.1 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def load_checkpoint(path: Path) -> dict | None:
    """The checkpoint at ``path``, or None when training starts fresh."""
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` atomically (a crash mid-write leaves the previous checkpoint)."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
