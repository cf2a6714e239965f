"""The embedded attribute CNN: a 64-d image embedding plus one classification head per attribute.

Trained by ``python -m edpbrl_plugin.models.shapes.train encoder`` on freshly rendered styled shapes.
Its attribute posteriors are sparse, interpretable reward features ("you seem to like: blue,
outline"); its held-out accuracy is what lets it judge generated images in benchmarks.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn import functional as F

from .shapes import ATTRIBUTES


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class AttributeEncoder(ModelMixin, ConfigMixin):
    """CNN over ``[B, 3, 32, 32]`` images in 0..1 -> embedding ``[B, embedding_dim]`` and attribute logits."""

    @register_to_config
    def __init__(self, attributes: dict[str, list[str]] | None = None, embedding_dim: int = 64, width: int = 16):
        super().__init__()
        attributes = {k: list(v) for k, v in (attributes or ATTRIBUTES).items()}
        self.attribute_names = list(attributes)
        self.body = nn.Sequential(
            _block(3, width), _block(width, width), nn.MaxPool2d(2),
            _block(width, 2 * width), _block(2 * width, 2 * width), nn.MaxPool2d(2),
            _block(2 * width, 4 * width), nn.MaxPool2d(2),
        )  # fmt: skip
        self.embed = nn.Linear(4 * width * 16, embedding_dim)
        self.heads = nn.ModuleDict({name: nn.Linear(embedding_dim, len(v)) for name, v in attributes.items()})

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Returns (raw embedding ``[B, embedding_dim]``, {attribute: logits ``[B, n_values]``})."""
        x = self.body(images * 2.0 - 1.0).flatten(1)
        embedding = self.embed(x)
        hidden = F.relu(embedding)
        return embedding, {name: head(hidden) for name, head in self.heads.items()}
