"""Feature encoders: images -> the feature vectors φ(x) the choice model is linear in.

One small interface (``encode`` images ``[B, H, W, C]`` in 0..1 -> float64 ``[B, d]``) so the store,
the nodes and the benchmarks never care which encoder runs: the embedded attribute CNN (default,
offline, interpretable) or CLIP from a local folder for real pipelines.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .embedded.shapes import ATTRIBUTES, IMAGE_SIZE


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


class EmbeddedEncoder(FeatureEncoder):
    """The shipped attribute CNN.

    ``representation="attributes"`` (default): the concatenated attribute posteriors (20-d; taste is
    close to linear and sparse there, and θ reads as "likes blue, outline"). ``"embedding"``: the
    CNN's L2-normalised 64-d embedding.
    """

    def __init__(self, representation: str = "attributes", folder: str | Path | None = None, batch_size: int = 512):
        from .embedded.weights import ENCODER_DIR, load_attribute_encoder

        if representation not in ("attributes", "embedding"):
            raise ValueError(f"representation must be 'attributes' or 'embedding', got {representation!r}")
        self.model = load_attribute_encoder(folder or ENCODER_DIR)
        self.representation = representation
        self.batch_size = batch_size
        self.attributes = {name: list(values) for name, values in (self.model.config.attributes or ATTRIBUTES).items()}
        self.name = f"embedded-{representation}"
        self.dim = sum(map(len, self.attributes.values())) if representation == "attributes" else self.model.config.embedding_dim

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


def load_encoder(spec: str = "embedded") -> FeatureEncoder:
    """An encoder by name: ``"embedded"`` / ``"embedded-attributes"``, ``"embedded-embedding"``,
    or ``"clip:/local/folder"`` (a CLIP model saved with ``save_pretrained``)."""
    if spec in ("embedded", "embedded-attributes"):
        return EmbeddedEncoder("attributes")
    if spec == "embedded-embedding":
        return EmbeddedEncoder("embedding")
    if spec.startswith("clip:"):
        from .clip import ClipEncoder

        return ClipEncoder(spec[len("clip:") :])
    raise ValueError(f"unknown feature encoder {spec!r}; use 'embedded', 'embedded-embedding' or 'clip:/path/to/clip'")
