"""The shapes model's attribute CNN as a feature encoder (registered as ``embedded``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ...features import FeatureEncoder, as_image_batch
from .shapes import ATTRIBUTES, IMAGE_SIZE
from .weights import ENCODER_DIR, load_attribute_encoder


class EmbeddedEncoder(FeatureEncoder):
    """The shipped attribute CNN.

    ``representation="attributes"`` (default): the concatenated attribute posteriors (20-d; taste is
    close to linear and sparse there, and θ reads as "likes blue, outline"). ``"embedding"``: the
    CNN's L2-normalised 64-d embedding.
    """

    def __init__(self, representation: str = "attributes", folder: str | Path | None = None, batch_size: int = 512):
        if representation not in ("attributes", "embedding"):
            raise ValueError(f"representation must be 'attributes' or 'embedding', got {representation!r}")
        self.model = load_attribute_encoder(folder or ENCODER_DIR)
        self.representation = representation
        self.batch_size = batch_size
        self.attributes = {name: list(values) for name, values in (self.model.config.attributes or ATTRIBUTES).items()}
        self.name = f"embedded-{representation}"
        self.dim = (
            sum(map(len, self.attributes.values()))
            if representation == "attributes"
            else self.model.config.embedding_dim
        )

    @torch.no_grad()
    def _forward(self, images) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = as_image_batch(images)
        if x.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
            x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="area")
        embeddings, logits = [], {k: [] for k in self.attributes}
        for chunk in x.split(self.batch_size):
            emb, out = self.model(chunk)
            embeddings.append(emb)
            for k in self.attributes:
                logits[k].append(out[k])
        return torch.cat(embeddings), {k: torch.cat(v) for k, v in logits.items()}

    def attribute_posteriors(self, images) -> dict[str, np.ndarray]:
        """Per attribute, the posterior over its values ``[B, n_values]``."""
        _, logits = self._forward(images)
        return {k: torch.softmax(v, dim=1).double().numpy() for k, v in logits.items()}

    def predict_attributes(self, images) -> dict[str, np.ndarray]:
        """Per attribute, the most likely value index ``[B]``."""
        return {k: v.argmax(axis=1) for k, v in self.attribute_posteriors(images).items()}

    def encode(self, images) -> np.ndarray:
        embedding, logits = self._forward(images)
        if self.representation == "embedding":
            return F.normalize(embedding, dim=1).double().numpy()
        return torch.cat([torch.softmax(logits[k], dim=1) for k in self.attributes], dim=1).double().numpy()

    def describe(self, theta: np.ndarray, top: int = 3) -> str:
        if self.representation != "attributes":
            return ""
        theta = np.asarray(theta, dtype=np.float64)
        likes, dislikes, start = [], [], 0
        for values in self.attributes.values():
            # Posteriors of one attribute sum to 1, so only differences within it matter: centre them.
            block = theta[start : start + len(values)]
            centred = block - block.mean()
            start += len(values)
            best, worst = int(centred.argmax()), int(centred.argmin())
            if centred[best] > 0.25:
                likes.append((centred[best], values[best]))
            if len(values) > 2 and centred[worst] < -0.25:  # for two values, the like already says it
                dislikes.append((-centred[worst], values[worst]))
        parts = []
        if likes:
            parts.append("you seem to like: " + ", ".join(v for _, v in sorted(likes, reverse=True)[:top]))
        if dislikes:
            parts.append("and not: " + ", ".join(v for _, v in sorted(dislikes, reverse=True)[:top]))
        return "; ".join(parts) if parts else "no clear preference yet"
