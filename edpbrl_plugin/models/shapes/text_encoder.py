"""A tiny text encoder over the attribute vocabulary: one token slot per attribute.

A prompt is any subset of attribute words in any order ("blue star outline navy"); each attribute
missing from the prompt gets that slot's learned "unspecified" token, so the empty prompt is the
unconditional input used for classifier-free guidance. Output ``[B, n_attributes, hidden_size]`` is
what ``UNet2DConditionModel`` takes as ``encoder_hidden_states``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .shapes import ATTRIBUTES

_SEPARATORS = re.compile(r"[\s,;]+")


class AttributeTextEncoder(ModelMixin, ConfigMixin):
    """Embeds attribute-word prompts; saved and loaded like any diffusers model."""

    @register_to_config
    def __init__(self, attributes: dict[str, list[str]] | None = None, hidden_size: int = 64):
        super().__init__()
        attributes = {k: list(v) for k, v in (attributes or ATTRIBUTES).items()}
        self.attribute_names = list(attributes)
        # Token 0 of each slot means "unspecified"; word i of the slot is token i + 1.
        sizes = torch.tensor([len(v) + 1 for v in attributes.values()])
        self.register_buffer("slot_offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)
        self.word_index = {w: (s, i + 1) for s, values in enumerate(attributes.values()) for i, w in enumerate(values)}
        self.token_embedding = nn.Embedding(int(sizes.sum()), hidden_size)
        self.norm = nn.LayerNorm(hidden_size)

    @property
    def vocabulary(self) -> list[str]:
        return list(self.word_index)

    def tokenize(self, prompts: Sequence[str], strict: bool = True) -> torch.Tensor:
        """Word ids per slot ``[B, n_attributes]``; unknown words raise unless ``strict=False`` (then warn)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        ids = torch.zeros(len(prompts), len(self.attribute_names), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
            for word in filter(None, _SEPARATORS.split(prompt.lower())):
                if word not in self.word_index:
                    message = (
                        f"unknown word {word!r} in prompt {prompt!r}; the vocabulary is: {', '.join(self.vocabulary)}"
                    )
                    if strict:
                        raise ValueError(message + " (pass strict=False to ignore unknown words)")
                    warnings.warn(message + "; ignored", stacklevel=2)
                    continue
                slot, token = self.word_index[word]
                if ids[row, slot] not in (0, token):
                    raise ValueError(
                        f"prompt {prompt!r} names two values of {self.attribute_names[slot]!r}; use at most one per attribute"
                    )
                ids[row, slot] = token
        return ids

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.token_embedding(input_ids.to(self.device) + self.slot_offsets))
