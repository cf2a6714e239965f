"""Feature encoders: images -> the feature vectors φ(x) the choice model is linear in.

One small interface (``encode`` images ``[B, H, W, C]`` in 0..1 -> float64 ``[B, d]``) so the store,
the nodes and the benchmarks never care which encoder runs: the embedded model's attribute CNN (default,
offline, interpretable; ``models/shapes``) or CLIP from a local folder for real pipelines. Encoders
register a name with :func:`register_encoder`; :func:`load_encoder` builds one by that name.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import torch


def as_image_batch(images, name: str = "images") -> torch.Tensor:
    """Validate ``[B, H, W, C]`` (C = 3, or 4 with alpha dropped) floats in 0..1 or uint8 -> float32 ``[B, 3, H, W]``."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images.copy())
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name} must be a [B, H, W, C] numpy array or torch tensor, got {type(images).__name__}")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] not in (3, 4) or images.shape[0] == 0:
        raise ValueError(f"{name} must have shape [B, H, W, 3] with B >= 1, got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    images = images[..., :3].float()
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return images.permute(0, 3, 1, 2).clamp(0, 1).contiguous()


class FeatureEncoder(ABC):
    """Maps images to feature vectors. ``name`` identifies the feature space (stored per session)."""

    name: str
    dim: int

    @abstractmethod
    def encode(self, images) -> np.ndarray:
        """Features ``[B, dim]`` (float64) of images ``[B, H, W, C]`` in 0..1."""

    def describe(self, theta: np.ndarray, top: int = 3) -> str:
        """A human summary of a reward direction in this feature space (empty if not interpretable)."""
        return ""


_FACTORIES: dict[str, tuple[Callable[..., FeatureEncoder], bool]] = {}


def register_encoder(name: str, factory: Callable[..., FeatureEncoder], takes_argument: bool = False) -> None:
    """Make ``load_encoder(name)`` build ``factory()``; with ``takes_argument``, ``load_encoder("name:arg")``
    builds ``factory(arg)`` (``"clip:/local/folder"``). Encoders register themselves where they are defined."""
    _FACTORIES[name] = (factory, takes_argument)


def encoder_names() -> list[str]:
    """Every registered encoder name, ``name:<argument>`` for those that take one."""
    return [f"{name}:<argument>" if takes else name for name, (_, takes) in _FACTORIES.items()]


def _discover_models() -> None:
    """Import each shipped model package (``edpbrl_plugin.models.<name>``) once; each registers its encoders.
    Plugin discovery by namespace, as hosts find node packs: this module names no model."""
    models = importlib.import_module(__name__.rsplit(".", 2)[0] + ".models")
    for info in pkgutil.iter_modules(models.__path__):
        importlib.import_module(f"{models.__name__}.{info.name}")


def load_encoder(spec: str) -> FeatureEncoder:
    """A registered encoder by name (``"embedded"``), or ``"name:argument"`` (``"clip:/local/folder"``)."""
    name, _, argument = spec.partition(":")
    if name not in _FACTORIES:
        _discover_models()
    factory, takes_argument = _FACTORIES.get(name, (None, False))
    if factory is None or takes_argument != bool(argument):
        raise ValueError(f"unknown feature encoder {spec!r}; use one of {encoder_names()}")
    return factory(argument) if takes_argument else factory()
