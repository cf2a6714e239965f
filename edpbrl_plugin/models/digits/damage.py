"""Real 28x28 images with controlled damage at graded severity: the form judge's training negatives and its
validation ladder.

Each kind imitates a way a tuned generator breaks a digit or a garment (what the tuned grids show):

* ``warp``: an elastic warp, a smooth random displacement of up to about ``4 * severity`` pixels;
* ``broken``: gaps, discs of background over ``60% * severity`` of the ink;
* ``speckle``: grain, per-pixel noise with a standard deviation of ``0.35 * severity``;
* ``blur``: a Gaussian blur of ``1.6 * severity`` pixels;
* ``melt``: drips of ink hanging off the strokes, ``6 * severity`` of them, growing with severity, on a mildly
  warped image;
* ``double``: a doubled outline, a ghost copy at 60% intensity shifted by ``1 + 4 * severity`` pixels (rounded)
  along the diagonal;
* ``merge``: two things in one, another image over this one at ``severity`` of its intensity (a boot merged
  with a bag);
* ``flood``: washed out, a bright canvas-filling slab with rounded corners laid over the image at
  ``0.5 + 0.45 * severity`` of white (what a run that has run away draws: near-white squares with a trace of the
  garment), with faint low-frequency shading. A validation kind only: the form judge does not train on it (see
  ``FORM_DAMAGES`` in :mod:`.train`).

Images are ``[N, 28, 28]`` floats in 0..1, white on black as the datasets store them. Severity 0 returns
them unchanged. All randomness comes from ``seed``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from .data import IMAGE_SIZE

DAMAGES = ("warp", "broken", "speckle", "blur", "melt", "double", "merge", "flood")
_GRID = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE]


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[N, H, W]`` by ``sigma`` pixels (unchanged below a thousandth of a pixel,
    where the kernel's weights would underflow)."""
    if sigma < 1e-3:
        return images
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    x = F.conv2d(images[:, None], kernel.view(1, 1, 1, -1), padding=(0, radius))
    return F.conv2d(x, kernel.view(1, 1, -1, 1), padding=(radius, 0))[:, 0]


def _warp(images: torch.Tensor, pixels: float, rng: np.random.Generator) -> torch.Tensor:
    """Displace ``[N, H, W]`` by a smooth random field whose standard deviation is ``pixels``."""
    n = len(images)
    field = gaussian_blur(torch.from_numpy(rng.normal(size=(2 * n, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)), 3.0)
    field = field / field.flatten(1).std(dim=1).clamp_min(1e-6)[:, None, None]
    field = field.view(n, 2, IMAGE_SIZE, IMAGE_SIZE).permute(0, 2, 3, 1) * (2.0 * pixels / IMAGE_SIZE)
    axis = torch.linspace(-1, 1, IMAGE_SIZE)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([xx, yy], dim=-1)[None] + field
    return F.grid_sample(images[:, None], grid, align_corners=True, padding_mode="zeros")[:, 0]


def _ink(image: np.ndarray) -> np.ndarray:
    """Pixel coordinates ``[M, 2]`` of the ink (or the brightest pixels of a faint image)."""
    ink = np.argwhere(image > 0.5)
    return ink if len(ink) else np.argwhere(image >= image.max())


def _broken(image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    ink = _ink(image)
    erased = np.zeros(image.shape, bool)
    while erased[ink[:, 0], ink[:, 1]].mean() < 0.6 * severity:
        centre, radius = ink[rng.integers(len(ink))], rng.uniform(1.2, 2.5)
        erased |= (_GRID[0] - centre[0]) ** 2 + (_GRID[1] - centre[1]) ** 2 <= radius**2
    return np.where(erased, 0.0, image)


def _melt(image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    ink, drips = _ink(image), np.zeros(image.shape, np.float32)
    for _ in range(max(1, round(6 * severity))):
        centre = ink[rng.integers(len(ink))]
        width = rng.uniform(1.0, 1.5 + 2.0 * severity)
        length = width * rng.uniform(1.5, 3.0)
        shape = ((_GRID[0] - centre[0] - 0.8 * length) / length) ** 2 + ((_GRID[1] - centre[1]) / width) ** 2
        drips = np.maximum(drips, np.clip(1.5 - shape, 0.0, 1.0))
    return np.maximum(image, drips)


def _flood(n: int, severity: float, rng: np.random.Generator) -> torch.Tensor:
    """``[n, 28, 28]`` bright slabs: a rounded box 1-3 pixels inside the frame at ``0.5 + 0.45 * severity``."""
    margin = rng.uniform(1.0, 3.0, size=(n, 1, 1))
    corner = rng.uniform(2.0, 5.0, size=(n, 1, 1))
    centre = (IMAGE_SIZE - 1) / 2.0
    half = centre - margin  # half side of the box
    dy, dx = np.abs(_GRID[0] - centre)[None] - (half - corner), np.abs(_GRID[1] - centre)[None] - (half - corner)
    outside = np.hypot(np.maximum(dy, 0.0), np.maximum(dx, 0.0)) + np.minimum(np.maximum(dy, dx), 0.0) - corner
    box = np.clip(0.5 - outside, 0.0, 1.0)  # 1 inside, a one-pixel soft edge
    shading = gaussian_blur(torch.from_numpy(rng.normal(size=(n, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)), 4.0)
    level = 0.5 + 0.45 * severity + 0.05 * shading.numpy() / max(float(shading.std()), 1e-6)  # shading std 0.05
    return torch.from_numpy((box * level).astype(np.float32))


def damaged_images(
    images: np.ndarray, kind: str, severity: float, seed: int, others: np.ndarray | None = None
) -> np.ndarray:
    """``images`` ``[N, 28, 28]`` in 0..1 with ``kind`` damage at ``severity`` in [0, 1] -> ``[N, 28, 28]`` float32.

    ``merge`` lays ``others`` (``[N, 28, 28]``, e.g. images of other classes) over them; no other kind uses it.
    """
    if kind not in DAMAGES:
        raise ValueError(f"unknown damage {kind!r}; choose from {DAMAGES}")
    if not 0.0 <= severity <= 1.0:
        raise ValueError(f"severity must be in [0, 1], got {severity}")
    x = torch.as_tensor(np.asarray(images, np.float32))
    if x.ndim != 3 or x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"images must be [N, {IMAGE_SIZE}, {IMAGE_SIZE}], got {tuple(x.shape)}")
    if severity == 0:
        return x.numpy().copy()
    rng = np.random.default_rng(seed)
    if kind == "warp":
        y = _warp(x, 4.0 * severity, rng)
    elif kind == "blur":
        y = gaussian_blur(x, 1.6 * severity)
    elif kind == "speckle":
        y = x + torch.from_numpy(rng.normal(size=x.shape).astype(np.float32)) * (0.35 * severity)
    elif kind == "broken":
        y = torch.from_numpy(np.stack([_broken(image, severity, rng) for image in x.numpy()]).astype(np.float32))
    elif kind == "melt":
        melted = torch.from_numpy(np.stack([_melt(image, severity, rng) for image in x.numpy()]).astype(np.float32))
        y = _warp(melted, 1.5 * severity, rng)
    elif kind == "double":
        shift = 1 + round(4 * severity)
        y = torch.maximum(x, 0.6 * torch.roll(x, shifts=(shift, shift), dims=(1, 2)))
    elif kind == "flood":
        y = torch.maximum(x, _flood(len(x), severity, rng))
    else:
        if others is None or np.shape(others) != tuple(x.shape):
            raise ValueError(f"merge needs others of the images' shape {tuple(x.shape)}")
        y = torch.maximum(x, severity * torch.as_tensor(np.asarray(others, np.float32)))
    return y.clamp(0.0, 1.0).numpy()
