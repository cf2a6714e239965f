"""CLIP image features from a local folder (for real pipelines; nothing is downloaded).

The folder is a ``CLIPModel`` or ``CLIPVisionModelWithProjection`` saved with ``save_pretrained``
(``config.json`` + weights, optionally ``preprocessor_config.json``). Preprocessing is done in torch
(resize, centre crop, normalise) so no image-processor backend is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .base import FeatureEncoder, as_image_batch, register_encoder

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipEncoder(FeatureEncoder):
    def __init__(self, folder: str | Path, batch_size: int = 32):
        from transformers import AutoConfig, CLIPModel, CLIPVisionModelWithProjection

        folder = Path(folder).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"no CLIP model in {folder} (config.json missing); save one there with save_pretrained"
            )
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        cls = CLIPModel if config.model_type == "clip" else CLIPVisionModelWithProjection
        if config.model_type not in ("clip", "clip_vision_model"):
            raise ValueError(f"{folder} holds a {config.model_type!r} model, not CLIP")
        self.model = cls.from_pretrained(folder, local_files_only=True).eval()
        vision = config.vision_config if config.model_type == "clip" else config
        self.size = int(vision.image_size)
        mean, std = _CLIP_MEAN, _CLIP_STD
        processor = folder / "preprocessor_config.json"
        if processor.is_file():
            spec = json.loads(processor.read_text())
            mean, std = spec.get("image_mean", mean), spec.get("image_std", std)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.batch_size = batch_size
        self.name = f"clip:{folder}"
        self.dim = int(config.projection_dim)

    def _preprocess(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        scale = self.size / min(h, w)
        x = F.interpolate(
            x,
            size=(max(self.size, round(h * scale)), max(self.size, round(w * scale))),
            mode="bicubic",
            align_corners=False,
            antialias=True,
        )
        top, left = (x.shape[-2] - self.size) // 2, (x.shape[-1] - self.size) // 2
        x = x[..., top : top + self.size, left : left + self.size]
        return (x - self.mean) / self.std

    @torch.no_grad()
    def encode(self, images) -> np.ndarray:
        x = as_image_batch(images)
        features = []
        for chunk in x.split(self.batch_size):
            pixels = self._preprocess(chunk)
            if hasattr(self.model, "get_image_features"):
                out = self.model.get_image_features(pixel_values=pixels)
                out = getattr(out, "pooler_output", out)
            else:
                out = self.model(pixel_values=pixels).image_embeds
            features.append(F.normalize(out.float(), dim=-1))
        return torch.cat(features).double().numpy()


register_encoder("clip", ClipEncoder, takes_argument=True)
