"""Image layout helpers shared by the CLI, benchmarks and nodes (uint8 conversion, grids)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def to_uint8(images: np.ndarray) -> np.ndarray:
    """``[B, H, W, C]`` floats in 0..1 (or uint8) -> uint8."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def grid(images: np.ndarray, columns: int, scale: int = 1, pad: int = 0) -> np.ndarray:
    """Tile ``[B, H, W, C]`` images into one uint8 ``[rows*H, columns*W, C]`` picture."""
    images = to_uint8(images)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty [B, H, W, C] array, got shape {images.shape}")
    b, h, w, c = images.shape
    rows = -(-b // columns)
    canvas = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, np.uint8)
    for i, im in enumerate(images):
        r, col = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        canvas[y : y + h, x : x + w] = im
    if scale > 1:
        canvas = canvas.repeat(scale, axis=0).repeat(scale, axis=1)
    return canvas


def save_grid(images: np.ndarray, path: str | Path, columns: int, scale: int = 4, pad: int = 1) -> Path:
    """Write a tiled PNG (nearest-neighbour upscaled, so 32x32 samples stay readable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid(images, columns, scale=scale, pad=pad)).save(path)
    return path
