"""Clean styled-shapes renders with controlled damage at graded severity, to validate the form judge.

Each kind imitates a way a tuned generator breaks its images (the demo's "melted scribbles"):

* ``warp``: an elastic warp, a smooth random displacement of up to ``6 * severity`` pixels;
* ``broken``: gaps in the shape, discs of background colour over ``severity * 60%`` of its pixels;
* ``speckle``: grain, per-pixel colour noise with a standard deviation of ``40 * severity`` (0..255);
* ``blur``: a Gaussian blur of ``2 * severity`` pixels;
* ``melt``: drips and blobs of the shape's colour hanging off its edge, ``severity * 6`` of them, growing
  with severity, on a mildly warped shape.

Severity 0 is the clean render. All randomness comes from ``seed``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch.nn import functional as F

from .shapes import IMAGE_SIZE, render, sample_spec

DAMAGES = ("warp", "broken", "speckle", "blur", "melt")


def damaged_renders(n: int, seed: int, kind: str, severity: float) -> np.ndarray:
    """``n`` random renders ``[n, 32, 32, 3]`` uint8 with ``kind`` damage at ``severity`` in [0, 1]."""
    if kind not in DAMAGES:
        raise ValueError(f"unknown damage {kind!r}; choose from {DAMAGES}")
    if not 0.0 <= severity <= 1.0:
        raise ValueError(f"severity must be in [0, 1], got {severity}")
    rng = np.random.default_rng(seed)
    specs = [sample_spec(rng) for _ in range(n)]
    images = np.stack([render(s) for s in specs]).astype(np.float32)
    masks = np.stack([render(replace(s, rgb=(255, 255, 255), background_rgb=(0, 0, 0)))[..., 0] for s in specs])
    masks = masks.astype(np.float32) / 255.0
    colours = np.array([s.rgb for s in specs], np.float32)
    backgrounds = np.array([s.background_rgb for s in specs], np.float32)
    if severity > 0:
        images = _DAMAGE[kind](images, masks, colours, backgrounds, severity, rng)
    return np.clip(np.round(images), 0, 255).astype(np.uint8)


def _warp(images: np.ndarray, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """Resample ``[n, H, W, C]`` along a smooth random displacement field of up to ``amplitude`` pixels."""
    n = len(images)
    coarse = torch.from_numpy(rng.normal(size=(n, 2, 5, 5)).astype(np.float32))
    field = F.interpolate(coarse, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bicubic", align_corners=True)
    field = field / field.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6) * amplitude
    axis = torch.linspace(-1, 1, IMAGE_SIZE)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([x, y], -1)[None] + field.permute(0, 2, 3, 1) * 2.0 / IMAGE_SIZE
    source = torch.from_numpy(images).permute(0, 3, 1, 2)
    warped = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return warped.permute(0, 2, 3, 1).numpy()


def _discs(centres: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Union of discs per image: centres ``[n, k, 2]`` (pixels), radii ``[n, k]`` -> soft mask ``[n, H, W]``."""
    axis = np.arange(IMAGE_SIZE) + 0.5
    y, x = np.meshgrid(axis, axis, indexing="ij")
    distance = np.hypot(x[None, None] - centres[..., 0, None, None], y[None, None] - centres[..., 1, None, None])
    return np.clip(radius[..., None, None] + 0.5 - distance, 0.0, 1.0).max(axis=1)


def _on_shape(masks: np.ndarray, k: int, rng: np.random.Generator, edge: bool = False) -> np.ndarray:
    """``k`` random pixel centres per image ``[n, k, 2]`` on the shape (or on its edge)."""
    weight = masks * (1.0 - masks) * 4.0 + 0.05 * masks if edge else masks
    centres = np.zeros((len(masks), k, 2))
    for i, w in enumerate(weight.reshape(len(masks), -1)):
        pick = rng.choice(w.size, size=k, p=w / w.sum())
        centres[i] = np.stack([pick % IMAGE_SIZE + 0.5, pick // IMAGE_SIZE + 0.5], -1)
    return centres


def _broken(images, masks, colours, backgrounds, severity, rng):
    """Erase discs over about ``60% * severity`` of the shape."""
    target = 0.6 * severity
    erased = np.zeros_like(masks)
    for _ in range(40):
        left = (masks * erased).sum((1, 2)) < target * masks.sum((1, 2))
        if not left.any():
            break
        disc = _discs(_on_shape(masks, 1, rng), np.full((len(masks), 1), 1.6))
        erased = np.where(left[:, None, None], np.maximum(erased, disc), erased)
    cut = (erased * masks)[..., None]
    return images * (1 - cut) + backgrounds[:, None, None] * cut


def _speckle(images, masks, colours, backgrounds, severity, rng):
    return images + rng.normal(scale=40.0 * severity, size=images.shape)


def _blur(images, masks, colours, backgrounds, severity, rng):
    sigma = 2.0 * severity
    radius = int(np.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel = torch.from_numpy((taps / taps.sum()).astype(np.float32))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x.reshape(len(images), 3, IMAGE_SIZE, IMAGE_SIZE).permute(0, 2, 3, 1).numpy()


def _melt(images, masks, colours, backgrounds, severity, rng):
    """Blobs and downward drips of the shape's colour off its edge, on a mildly warped shape."""
    k = max(1, round(6 * severity))
    starts = _on_shape(masks, k, rng, edge=True)
    length = rng.uniform(1.0, 1.0 + 5.0 * severity, size=(len(masks), k))
    steps = np.linspace(0.0, 1.0, 6)
    drip = starts[:, :, None, :] + np.stack([np.zeros_like(steps), steps], -1)[None, None] * length[..., None, None]
    radius = np.repeat(rng.uniform(0.8, 0.8 + 1.6 * severity, size=(len(masks), k)), len(steps), axis=1)
    blobs = _discs(drip.reshape(len(masks), -1, 2), radius)[..., None]
    melted = images * (1 - blobs) + colours[:, None, None] * blobs
    return _warp(melted.astype(np.float32), 1.2 * severity, rng)


_DAMAGE = {
    "warp": lambda images, masks, colours, backgrounds, severity, rng: _warp(images, 6.0 * severity, rng),
    "broken": _broken,
    "speckle": _speckle,
    "blur": _blur,
    "melt": _melt,
}
