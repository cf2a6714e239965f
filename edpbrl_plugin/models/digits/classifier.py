"""A small CNN classifier over 28x28 grayscale images: the simulated user's judge of liked classes in the
benchmarks, and (its penultimate layer) the feature encoder the choice model is linear in.

Trained by ``python -m edpbrl_plugin.models.digits.train classifier --dataset digits|fashion``.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn import functional as F


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class DigitClassifier(ModelMixin, ConfigMixin):
    """CNN over ``[B, 1, 28, 28]`` images in 0..1 (white on black) -> embedding ``[B, embedding_dim]`` and
    class logits ``[B, num_classes]``."""

    @register_to_config
    def __init__(self, num_classes: int = 10, embedding_dim: int = 64, width: int = 32, dropout: float = 0.3):
        super().__init__()
        self.body = nn.Sequential(
            _block(1, width), _block(width, width), nn.MaxPool2d(2),            # 14x14
            _block(width, 2 * width), _block(2 * width, 2 * width), nn.MaxPool2d(2),  # 7x7
            _block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1),
        )  # fmt: skip
        self.embed = nn.Linear(4 * width, embedding_dim)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(embedding_dim, num_classes)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (embedding ``[B, embedding_dim]`` after its ReLU, logits ``[B, num_classes]``)."""
        embedding = F.relu(self.embed(self.body(images * 2.0 - 1.0).flatten(1)))
        return embedding, self.head(self.drop(embedding))
