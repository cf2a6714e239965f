"""Is a styled-shapes image well formed? Re-render it procedurally and compare (evaluation only, never in the loop).

The attribute encoder was trained on clean renders only, so it names a melted blue scribble "blue outline
square" with the confidence it gives a clean one. This judge asks instead whether some clean render explains
the pixels:

1. Background colour from the border, shape colour from the pixels farthest from it; every pixel's
   coverage ("alpha") is its projection on the line between the two colours.
2. For each of the 8 (shape, fill) kinds, fit centre, radius and rotation of a soft procedural render
   (signed distances of the same geometry :mod:`.shapes` draws) to the coverage by gradient descent from a
   few starts, all fits of a batch at once.
3. Defects, each scaled so that 1.0 is the largest a well-formed image may show:
   ``shape``: the part of the coverage that the best fit misses or adds, counting only pixels more than
   one pixel away from the fitted outline (thin strokes drawn a pixel off are not broken);
   ``background``: the colour noise of the background away from the shape;
   ``colour``: how far the shape's pixels stray from the single shape colour.

``defect = max(...)``; an image is well formed when ``defect <= 1``; ``score = 1 / (1 + defect)``.
The thresholds come from clean renders and the shipped model's samples (``edpbrl bench judge`` checks them
against graded damage and writes the grids of what passes and fails).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from ...imaging import to_uint8
from .shapes import ATTRIBUTES, IMAGE_SIZE

#: Stroke width of outlines in pixels of the 32x32 image (as :func:`.shapes.render` draws it).
STROKE_PX = round(0.075 * IMAGE_SIZE * 4) / 4
#: Width of the anti-aliased edge ramp in pixels (Lanczos downsampling of the 4x drawing).
EDGE_PX = 2.0
#: Defect scales: the largest value of each defect that a well-formed image may show.
LIMITS = {"shape": 0.12, "background": 4.0, "colour": 0.12, "edges": 1.0}
#: Per shape: vertex angles (degrees), vertex radii (fractions of the radius), rotational period (degrees).
_POLYGONS = {
    "square": (np.arange(4) * 90.0 + 45.0, np.full(4, 0.92), 90.0),
    "triangle": (np.arange(3) * 120.0 - 90.0, np.full(3, 1.05), 120.0),
    "star": (np.arange(10) * 36.0 - 90.0, np.where(np.arange(10) % 2 == 0, 1.08, 0.46), 72.0),
}
_STEPS = 25
_TURNS = 12  # coarse rotations per period
_RADII = 9  # coarse radii, about one pixel apart
_CHUNK = 8192  # shapes rendered at once in the coarse search
_TABLE_EXTENT, _TABLE_SIZE = 4.0, 512  # the unit polygons' distance tables
_TOLERANCE_PX = 1.0
_PREFILTER_PX = 0.5


@dataclass(frozen=True)
class FormReport:
    """Per image ``[B]``: whether it is well formed, its score in (0, 1], the defects and the best fit."""

    well_formed: np.ndarray
    score: np.ndarray
    defects: dict[str, np.ndarray]
    shape: np.ndarray
    fill: np.ndarray
    fit: np.ndarray  # [B, H, W] coverage of the best clean render


class FormJudge:
    """Well-formedness of styled-shapes images ``[B, H, W, 3]`` (0..1 floats or uint8), by procedural re-rendering."""

    def __init__(self, limits: dict[str, float] | None = None, steps: int = _STEPS):
        self.limits = dict(LIMITS, **(limits or {}))
        self.steps = steps
        centres = torch.arange(IMAGE_SIZE, dtype=torch.float32) + 0.5
        y, x = torch.meshgrid(centres, centres, indexing="ij")
        self._points = torch.stack([x.flatten(), y.flatten()], dim=1)  # [P, 2] pixel centres

    def __call__(self, images) -> FormReport:
        pixels = to_uint8(np.asarray(images)).astype(np.float32)
        if pixels.ndim != 4 or pixels.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise ValueError(f"images must be [B, {IMAGE_SIZE}, {IMAGE_SIZE}, 3], got {pixels.shape}")
        flat = _smooth(torch.from_numpy(pixels)).reshape(len(pixels), -1, 3)
        background, colour, alpha, off_line = _coverage(flat)
        best_loss = torch.full((len(flat),), float("inf"))
        best_fit = torch.zeros_like(alpha)
        best_kind = torch.zeros(len(flat), dtype=torch.long)
        kinds = [(s, f) for s in range(len(ATTRIBUTES["shape"])) for f in range(len(ATTRIBUTES["fill"]))]
        for index, (shape, fill) in enumerate(kinds):
            loss, fit = self._fit(alpha, ATTRIBUTES["shape"][shape], ATTRIBUTES["fill"][fill] == "outline")
            better = loss < best_loss
            best_loss = torch.where(better, loss, best_loss)
            best_fit = torch.where(better[:, None], fit, best_fit)
            best_kind = torch.where(better, index, best_kind)
        defects = {
            "shape": _shape_defect(alpha, best_fit) / self.limits["shape"],
            "background": _background_noise(flat, background, best_fit) / self.limits["background"],
            "colour": _colour_defect(off_line, colour, background, alpha) / self.limits["colour"],
            "edges": _softness(alpha, best_fit) / self.limits["edges"],
        }
        defects = {k: v.numpy().astype(np.float64) for k, v in defects.items()}
        defect = np.max(np.stack(list(defects.values())), axis=0)
        kind = best_kind.numpy()
        return FormReport(
            well_formed=defect <= 1.0,
            score=1.0 / (1.0 + defect),
            defects=defects,
            shape=np.array([kinds[k][0] for k in kind], dtype=np.int64),
            fill=np.array([kinds[k][1] for k in kind], dtype=np.int64),
            fit=best_fit.reshape(-1, IMAGE_SIZE, IMAGE_SIZE).numpy(),
        )

    def _fit(self, alpha: torch.Tensor, shape: str, outline: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Best soft render of one kind per image: (squared error ``[B]``, coverage ``[B, P]``).

        A coarse search over radius and rotation about the coverage's centroid, then gradient descent on
        centre, radius and rotation from the best start.
        """
        b = len(alpha)
        mass = alpha.sum(1, keepdim=True).clamp_min(1e-6)
        centroid = (alpha[:, :, None] * self._points[None]).sum(1) / mass  # [B, 2]
        period = _POLYGONS[shape][2] if shape in _POLYGONS else 360.0
        turns = 1 if shape == "circle" else _TURNS
        radii = torch.linspace(IMAGE_SIZE * 0.17, IMAGE_SIZE * 0.43, _RADII)
        starts = torch.cartesian_prod(radii, torch.arange(turns) * period / turns / 10.0)  # [S, 2]
        n = len(starts)
        with torch.no_grad():
            losses = []
            for rows in torch.arange(b).split(max(1, _CHUNK // n)):
                coverage = self._render(
                    shape,
                    outline,
                    centroid[rows].repeat_interleave(n, 0),
                    starts[:, 0].repeat(len(rows)),
                    starts[:, 1].repeat(len(rows)),
                )
                losses.append(((coverage - alpha[rows].repeat_interleave(n, 0)) ** 2).sum(1).reshape(len(rows), n))
            best = starts[torch.cat(losses).argmin(1)]  # [B, 2]
        centre = centroid.clone().requires_grad_(True)
        radius = best[:, 0].clone().requires_grad_(True)
        turn = best[:, 1].clone().requires_grad_(True)  # tens of degrees
        optimiser = torch.optim.Adam([centre, radius, turn], lr=0.15)
        for _ in range(self.steps):
            optimiser.zero_grad()
            ((self._render(shape, outline, centre, radius, turn) - alpha) ** 2).sum().backward()
            optimiser.step()
        with torch.no_grad():
            fit = self._render(shape, outline, centre, radius.clamp_min(1.0), turn)
            return ((fit - alpha) ** 2).sum(1), fit

    def _render(
        self, shape: str, outline: bool, centre: torch.Tensor, radius: torch.Tensor, turn: torch.Tensor
    ) -> torch.Tensor:
        """Anti-aliased coverage ``[N, P]`` of N shapes, from signed distances in pixels."""
        points = self._points[None] - centre[:, None, :]  # [N, P, 2]
        if shape == "circle":
            distance = points.norm(dim=-1) - radius[:, None]
            if outline:  # the stroke lies inside the circle's edge
                distance = (distance + STROKE_PX / 2).abs() - STROKE_PX / 2
        else:  # the polygon's distance scales with its radius: look it up in the unit polygon's table
            angle = torch.deg2rad(10.0 * turn)[:, None]
            cos, sin = torch.cos(angle), torch.sin(angle)
            x, y = points[..., 0], points[..., 1]
            unit = torch.stack([cos * x + sin * y, -sin * x + cos * y], dim=-1) / radius[:, None, None]
            table = _unit_distance(shape)
            lookup = torch.nn.functional.grid_sample(
                table, (unit / _TABLE_EXTENT).reshape(1, -1, 1, 2), align_corners=True, padding_mode="border"
            )
            distance = lookup.reshape(len(centre), -1) * radius[:, None]
            if outline:  # the stroke is centred on the edges, with round joins
                distance = distance.abs() - STROKE_PX / 2
        return (0.5 - distance / EDGE_PX).clamp(0.0, 1.0)


@functools.cache
def _unit_distance(shape: str) -> torch.Tensor:
    """Signed distance of the unit-radius polygon, unrotated, on a grid over ``[-E, E]^2``: ``[1, 1, G, G]``."""
    angles, scales, _ = _POLYGONS[shape]
    theta = np.deg2rad(angles)
    vertices = torch.tensor(np.stack([scales * np.cos(theta), scales * np.sin(theta)], -1), dtype=torch.float32)
    axis = torch.linspace(-_TABLE_EXTENT, _TABLE_EXTENT, _TABLE_SIZE)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    points = torch.stack([x.flatten(), y.flatten()], dim=1)
    rows = [_polygon_distance(chunk[None], vertices[None])[0] for chunk in points.split(65536)]
    return torch.cat(rows).reshape(1, 1, _TABLE_SIZE, _TABLE_SIZE)


def _polygon_distance(points: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """Signed distance ``[N, P]`` from points ``[N, P, 2]`` to closed polygons ``[N, V, 2]`` (negative inside)."""
    a = vertices[:, None, :, :]  # [N, 1, V, 2]
    b = torch.roll(vertices, -1, dims=1)[:, None, :, :]
    p = points[:, :, None, :]  # [N, P, 1, 2]
    edge, offset = b - a, p - a
    t = ((offset * edge).sum(-1) / (edge * edge).sum(-1).clamp_min(1e-9)).clamp(0.0, 1.0)
    distance = (offset - edge * t[..., None]).norm(dim=-1).min(dim=2).values  # [N, P]
    py = p[..., 1]
    crosses = (a[..., 1] > py) != (b[..., 1] > py)
    x_cross = a[..., 0] + (py - a[..., 1]) * edge[..., 0] / torch.where(edge[..., 1] == 0, 1e-9, edge[..., 1])
    inside = (crosses & (p[..., 0] < x_cross)).sum(dim=2) % 2 == 1
    return torch.where(inside, -distance, distance)


def _smooth(images: torch.Tensor) -> torch.Tensor:
    """A slight Gaussian blur of ``[B, H, W, 3]`` (σ = 0.5 px) that removes the Lanczos ringing of clean renders,
    so that no blur or warp can make an image look cleaner than its render."""
    taps = torch.exp(-0.5 * (torch.arange(-1.0, 2.0) / _PREFILTER_PX) ** 2)
    kernel = taps / taps.sum()
    x = images.permute(0, 3, 1, 2).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    x = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    x = torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, kernel.view(1, 1, 1, 3)), kernel.view(1, 1, 3, 1))
    return x.reshape(len(images), 3, IMAGE_SIZE, IMAGE_SIZE).permute(0, 2, 3, 1)


def _coverage(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Background ``[B, 3]``, shape colour ``[B, 3]``, coverage ``[B, P]`` and off-line distance ``[B, P]``.

    The background is the median border colour, the shape colour the median of the 8 pixels farthest from
    it; a pixel's coverage is its position between the two, its off-line distance how far its colour is
    from any mix of the two (0..255 units).
    """
    side = IMAGE_SIZE
    grid = flat.reshape(-1, side, side, 3)
    border = torch.cat([grid[:, 0], grid[:, -1], grid[:, 1:-1, 0], grid[:, 1:-1, -1]], dim=1)
    background = border.median(dim=1).values  # [B, 3]
    away = flat - background[:, None]
    far = away.norm(dim=-1).topk(8, dim=1).indices
    colour = torch.gather(flat, 1, far[..., None].expand(-1, -1, 3)).median(dim=1).values
    direction = colour - background
    length2 = (direction * direction).sum(-1, keepdim=True).clamp_min(1.0)
    position = (away * direction[:, None]).sum(-1) / length2
    alpha = position.clamp(0.0, 1.0)
    off_line = (away - position.clamp(0.0, 1.0)[..., None] * direction[:, None]).norm(dim=-1)
    return background, colour, alpha, off_line


def _shape_defect(alpha: torch.Tensor, fit: torch.Tensor) -> torch.Tensor:
    """Coverage the fit misses or adds more than a pixel away from its edge, over the fit's coverage. ``[B]``"""
    side = IMAGE_SIZE
    image = fit.reshape(-1, 1, side, side)
    size = 2 * int(_TOLERANCE_PX) + 1
    grown = torch.nn.functional.max_pool2d(image, size, 1, size // 2).flatten(1)
    shrunk = -torch.nn.functional.max_pool2d(-image, size, 1, size // 2).flatten(1)
    added = (alpha - grown).clamp_min(0.0).sum(1)
    missed = (shrunk - alpha).clamp_min(0.0).sum(1)
    return (added + missed) / fit.sum(1).clamp_min(1.0)


def _background_noise(flat: torch.Tensor, background: torch.Tensor, fit: torch.Tensor) -> torch.Tensor:
    """Root-mean-square colour deviation of background pixels 2+ pixels from the fitted shape (0..255). ``[B]``"""
    side = IMAGE_SIZE
    near = torch.nn.functional.max_pool2d(fit.reshape(-1, 1, side, side), 5, 1, 2).flatten(1) > 0.02
    deviation = (flat - background[:, None]).pow(2).sum(-1)
    far = (~near).float()
    return (deviation * far).sum(1).div(far.sum(1).clamp_min(1.0)).sqrt()


def _colour_defect(
    off_line: torch.Tensor, colour: torch.Tensor, background: torch.Tensor, alpha: torch.Tensor
) -> torch.Tensor:
    """Mean off-line distance of the shape's pixels, over the shape-to-background contrast. ``[B]``"""
    weight = alpha
    contrast = (colour - background).norm(dim=-1).clamp_min(1.0)
    return (off_line * weight).sum(1) / weight.sum(1).clamp_min(1e-6) / contrast


def _softness(alpha: torch.Tensor, fit: torch.Tensor) -> torch.Tensor:
    """How much softer the edges are than the clean render's: partial coverage over the fit's, minus one. ``[B]``"""
    partial = (alpha * (1 - alpha)).sum(1)
    return (partial / (fit * (1 - fit)).sum(1).clamp_min(1.0) - 1.0).clamp_min(0.0)
