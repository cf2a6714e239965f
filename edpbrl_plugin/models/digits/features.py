"""The digits / fashion classifier's penultimate layer as a feature encoder (registered as ``digits`` and
``fashion``): the space the choice model is linear in for the real-data models, as PAPA's classifier is the
user's eyes there."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ...features import FeatureEncoder, as_image_batch
from .data import CLASS_NAMES, IMAGE_SIZE
from .weights import load_classifier


def to_gray(images) -> torch.Tensor:
    """Images ``[B, H, W, C]`` in 0..1 -> ``[B, 1, 28, 28]`` (channel mean, area-resized when needed)."""
    x = as_image_batch(images).mean(dim=1, keepdim=True)
    if x.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
        x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="area")
    return x


class DigitsEncoder(FeatureEncoder):
    """The shipped classifier of ``dataset``: L2-normalised 64-d embedding (``encode``) and class posteriors
    (``class_posteriors``, for judging and for ``describe``)."""

    def __init__(self, dataset: str = "digits", batch_size: int = 512):
        self.model = load_classifier(dataset)
        self.dataset = dataset
        self.classes = CLASS_NAMES[dataset]
        self.batch_size = batch_size
        self.name = f"{dataset}-embedding"
        self.dim = int(self.model.config.embedding_dim)

    @torch.no_grad()
    def _forward(self, images) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = [self.model(chunk) for chunk in to_gray(images).split(self.batch_size)]
        return torch.cat([e for e, _ in outputs]), torch.cat([logits for _, logits in outputs])

    def encode(self, images) -> np.ndarray:
        embedding, _ = self._forward(images)
        return F.normalize(embedding, dim=1).double().numpy()

    def class_posteriors(self, images) -> np.ndarray:
        """``[B, n_classes]`` class probabilities."""
        _, logits = self._forward(images)
        return torch.softmax(logits, dim=1).double().numpy()

    def predict_classes(self, images) -> np.ndarray:
        """``[B]`` most likely class index."""
        return self.class_posteriors(images).argmax(axis=1)
