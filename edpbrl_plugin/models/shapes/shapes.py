"""Procedural "styled shapes": the data the embedded generator and encoder are trained on.

Every image carries its ground-truth attributes, so simulated users can like or dislike them and
benchmarks can measure preferences exactly. Nothing is stored on disk: any amount of data is
regenerated from a seed. Images are drawn at 4x and downsampled with Lanczos (anti-aliased edges).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 32
_SUPERSAMPLE = 4

#: Attribute name -> its values, in label order. One prompt word per value.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": ("circle", "square", "triangle", "star"),
    "hue": ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink"),
    "fill": ("filled", "outline"),
    "background": ("white", "black", "grey", "navy"),
    "size": ("small", "large"),
}

#: Hue centres in degrees, aligned with ``ATTRIBUTES["hue"]``.
HUE_DEGREES = np.array([0.0, 30.0, 55.0, 120.0, 180.0, 225.0, 275.0, 320.0])
#: Background base colours (RGB 0..255), aligned with ``ATTRIBUTES["background"]``.
BACKGROUND_RGB = np.array([[248, 248, 248], [8, 8, 8], [128, 128, 128], [22, 28, 96]], dtype=np.float64)
#: Radius ranges (fraction of the image side), aligned with ``ATTRIBUTES["size"]``.
SIZE_RANGES = ((0.20, 0.27), (0.31, 0.40))

_HUE_JITTER_DEG = 7.0
_BACKGROUND_JITTER = 7.0
_CENTRE_JITTER = 0.06
_STROKE = 0.075


@dataclass(frozen=True)
class ShapeSpec:
    """One image's attributes (label indices) and its continuous nuisance parameters."""

    shape: int
    hue: int
    fill: int
    background: int
    size: int
    radius: float
    rotation: float
    centre: tuple[float, float]
    rgb: tuple[int, int, int]
    background_rgb: tuple[int, int, int]

    def labels(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in ATTRIBUTES}

    def words(self) -> list[str]:
        return [ATTRIBUTES[name][getattr(self, name)] for name in ATTRIBUTES]


def sample_spec(rng: np.random.Generator, **fixed: int) -> ShapeSpec:
    """Draw one random spec; ``fixed`` pins attributes by label index (e.g. ``hue=5``)."""
    unknown = set(fixed) - set(ATTRIBUTES)
    if unknown:
        raise ValueError(f"unknown attribute(s) {sorted(unknown)}; known: {list(ATTRIBUTES)}")
    labels = {}
    for name, values in ATTRIBUTES.items():
        value = fixed.get(name)
        if value is None:
            value = int(rng.integers(len(values)))
        elif not 0 <= value < len(values):
            raise ValueError(f"{name}={value} is out of range 0..{len(values) - 1}")
        labels[name] = int(value)
    lo, hi = SIZE_RANGES[labels["size"]]
    hue = (HUE_DEGREES[labels["hue"]] + rng.uniform(-_HUE_JITTER_DEG, _HUE_JITTER_DEG)) % 360.0
    rgb = colorsys.hsv_to_rgb(hue / 360.0, rng.uniform(0.75, 1.0), rng.uniform(0.82, 1.0))
    background = np.clip(BACKGROUND_RGB[labels["background"]] + rng.uniform(-1, 1, 3) * _BACKGROUND_JITTER, 0, 255)
    return ShapeSpec(
        radius=float(rng.uniform(lo, hi)),
        rotation=float(rng.uniform(0.0, 360.0)),
        centre=(float(0.5 + rng.uniform(-1, 1) * _CENTRE_JITTER), float(0.5 + rng.uniform(-1, 1) * _CENTRE_JITTER)),
        rgb=tuple(int(round(c * 255)) for c in rgb),
        background_rgb=tuple(int(round(c)) for c in background),
        **labels,
    )


def _outline_points(spec: ShapeSpec, side: float) -> list[tuple[float, float]]:
    cx, cy = spec.centre[0] * side, spec.centre[1] * side
    r = spec.radius * side
    shape = ATTRIBUTES["shape"][spec.shape]
    if shape == "square":
        angles, radii = np.arange(4) * 90.0 + 45.0, np.full(4, r * 0.92)
    elif shape == "triangle":
        angles, radii = np.arange(3) * 120.0 - 90.0, np.full(3, r * 1.05)
    elif shape == "star":
        angles, radii = np.arange(10) * 36.0 - 90.0, np.where(np.arange(10) % 2 == 0, r * 1.08, r * 0.46)
    else:
        raise ValueError(f"{shape} has no polygon outline")
    theta = np.deg2rad(angles + spec.rotation)
    return list(zip(cx + radii * np.cos(theta), cy + radii * np.sin(theta)))


def render(spec: ShapeSpec) -> np.ndarray:
    """Draw one spec as a uint8 array ``[32, 32, 3]``."""
    side = IMAGE_SIZE * _SUPERSAMPLE
    canvas = Image.new("RGB", (side, side), spec.background_rgb)
    draw = ImageDraw.Draw(canvas)
    filled = ATTRIBUTES["fill"][spec.fill] == "filled"
    width = int(round(_STROKE * side))
    style = {"fill": spec.rgb} if filled else {"outline": spec.rgb, "width": width}
    if ATTRIBUTES["shape"][spec.shape] == "circle":
        cx, cy, r = spec.centre[0] * side, spec.centre[1] * side, spec.radius * side
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), **style)
    else:
        points = _outline_points(spec, side)
        if filled:
            draw.polygon(points, fill=spec.rgb)
        else:
            # Closed stroke with round joins: polygon(width=...) leaves notches at sharp corners.
            draw.line(points + points[:1], fill=spec.rgb, width=width, joint="curve")
            for x, y in points:
                draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=spec.rgb)
    small = canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)
    return np.asarray(small, dtype=np.uint8)


def render_batch(n: int, seed: int, **fixed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``n`` random images ``[n, 32, 32, 3]`` uint8 and their labels (name -> int array ``[n]``)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    specs = [sample_spec(rng, **fixed) for _ in range(n)]
    images = np.stack([render(s) for s in specs]) if specs else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    labels = {name: np.array([getattr(s, name) for s in specs], dtype=np.int64) for name in ATTRIBUTES}
    return images, labels


def measure_background(images: np.ndarray) -> np.ndarray:
    """Background label per image from its border pixels (median, nearest base colour). ``[n]``."""
    images = np.asarray(images, dtype=np.float64)
    border = np.concatenate(
        [images[:, 0, :, :], images[:, -1, :, :], images[:, 1:-1, 0, :], images[:, 1:-1, -1, :]], axis=1
    )
    median = np.median(border, axis=1)
    distance = np.linalg.norm(median[:, None, :] - BACKGROUND_RGB[None], axis=-1)
    return distance.argmin(axis=1)


def measure_hue(images: np.ndarray) -> np.ndarray:
    """Hue label per image from its most saturated foreground pixels; -1 where no shape is visible. ``[n]``."""
    images = np.asarray(images, dtype=np.float64) / 255.0
    flat = images.reshape(len(images), -1, 3)
    cmax, cmin = flat.max(axis=-1), flat.min(axis=-1)
    chroma = cmax - cmin
    r, g, b = flat[..., 0], flat[..., 1], flat[..., 2]
    safe = np.where(chroma > 0, chroma, 1.0)
    hue = np.where(cmax == r, ((g - b) / safe) % 6, np.where(cmax == g, (b - r) / safe + 2, (r - g) / safe + 4)) * 60.0
    # Navy is the only chromatic background; its pixels never count as the shape's colour.
    navy = np.linalg.norm(flat * 255.0 - BACKGROUND_RGB[3], axis=-1) < 40
    weight = np.where((chroma > 0.35) & ~navy, chroma, 0.0)
    top = np.sort(weight, axis=1)[:, -12:].min(axis=1, keepdims=True)
    weight = np.where(weight >= np.maximum(top, 1e-9), weight, 0.0)
    angle = np.deg2rad(hue)
    mean = np.arctan2((weight * np.sin(angle)).sum(1), (weight * np.cos(angle)).sum(1))
    mean_deg = np.rad2deg(mean) % 360.0
    gap = np.abs((mean_deg[:, None] - HUE_DEGREES[None] + 180.0) % 360.0 - 180.0)
    labels = gap.argmin(axis=1)
    return np.where(weight.sum(1) > 0, labels, -1)


def words_to_labels(words: list[str]) -> dict[str, int]:
    """Map attribute words ("blue", "star") to ``{attribute: label}``; unknown words raise."""
    index = {w: (name, i) for name, values in ATTRIBUTES.items() for i, w in enumerate(values)}
    out: dict[str, int] = {}
    for word in words:
        if word not in index:
            raise ValueError(f"unknown attribute word {word!r}; vocabulary: {sorted(index)}")
        name, i = index[word]
        out[name] = i
    return out
