"""Analytic signed distance functions: test shapes and a simple head for benchmarks.

All functions map points (N, 3) in the nphm frame (+y up, face towards +z) to SDF values (N,).
"""
from __future__ import annotations

from typing import Sequence

import torch


def sphere_sdf(points: torch.Tensor, radius: float = 0.3, center: Sequence[float] = (0.0, 0.0, 0.0)) -> torch.Tensor:
    """Exact SDF of a sphere."""
    c = torch.as_tensor(center, dtype=points.dtype, device=points.device)
    return torch.linalg.vector_norm(points - c, dim=-1) - radius


def ellipsoid_sdf(points: torch.Tensor, center: Sequence[float], radii: Sequence[float]) -> torch.Tensor:
    """Approximate ellipsoid SDF ``k0 (k0 - 1) / k1`` (exact on the surface, |grad| ~ 1 near it)."""
    c = torch.as_tensor(center, dtype=points.dtype, device=points.device)
    r = torch.as_tensor(radii, dtype=points.dtype, device=points.device)
    p = points - c
    k0 = torch.linalg.vector_norm(p / r, dim=-1)
    k1 = torch.linalg.vector_norm(p / (r * r), dim=-1).clamp_min(1e-9)
    return k0 * (k0 - 1.0) / k1


def capsule_sdf(points: torch.Tensor, a: Sequence[float], b: Sequence[float], radius: float) -> torch.Tensor:
    """Exact SDF of a capsule (segment a-b thickened by ``radius``)."""
    a_t = torch.as_tensor(a, dtype=points.dtype, device=points.device)
    b_t = torch.as_tensor(b, dtype=points.dtype, device=points.device)
    ab = b_t - a_t
    t = ((points - a_t) @ ab / (ab @ ab)).clamp(0.0, 1.0)
    return torch.linalg.vector_norm(points - (a_t + t[:, None] * ab), dim=-1) - radius


def smooth_union(d1: torch.Tensor, d2: torch.Tensor, k: float) -> torch.Tensor:
    """Polynomial smooth minimum of two SDFs with blend radius ``k``."""
    h = (0.5 + 0.5 * (d2 - d1) / k).clamp(0.0, 1.0)
    return d2 * (1 - h) + d1 * h - k * h * (1 - h)


def head_sdf(points: torch.Tensor) -> torch.Tensor:
    """A simple closed, head-sized shape: cranium, face, nose, ears and neck (about
    0.64 x 1.1 x 0.8 nphm units, inside the release's fitting box)."""
    d = ellipsoid_sdf(points, (0.0, 0.12, -0.08), (0.3, 0.34, 0.36))
    d = smooth_union(d, ellipsoid_sdf(points, (0.0, -0.1, 0.08), (0.24, 0.3, 0.26)), 0.06)
    d = smooth_union(d, ellipsoid_sdf(points, (0.0, -0.02, 0.32), (0.045, 0.09, 0.06)), 0.03)
    for side in (-1.0, 1.0):
        d = smooth_union(d, ellipsoid_sdf(points, (0.29 * side, 0.0, -0.08), (0.035, 0.09, 0.06)), 0.03)
    d = smooth_union(d, capsule_sdf(points, (0.0, -0.25, -0.1), (0.0, -0.85, -0.12), 0.16), 0.08)
    return d


# Frontal (x, y) positions of the left (+x) member of each symmetric pair and of the midline points.
_LEFT_XY = (
    (0.08, 0.22), (0.18, 0.2), (0.05, 0.1), (0.12, 0.1), (0.19, 0.1), (0.04, -0.04), (0.13, -0.04), (0.2, 0.0),
    (0.05, -0.16), (0.09, -0.2), (0.16, -0.18), (0.06, -0.28), (0.14, -0.28), (0.22, 0.2), (0.12, 0.3), (0.19, -0.08),
)
_MID_Y = (-0.34, -0.24, -0.13, -0.03, 0.08, 0.19, 0.3)


def head_anchor_layout() -> torch.Tensor:
    """39 facial keypoints on :func:`head_sdf` in the release's order: 16 pairs (the
    subject's right, -x, then its mirror image on the left), then 7 midline points (x = 0).
    Returns (39, 3)."""
    left = torch.tensor(_LEFT_XY)
    pairs = torch.stack([left * torch.tensor([-1.0, 1.0]), left], dim=1).reshape(-1, 2)
    mid = torch.stack([torch.zeros(len(_MID_Y)), torch.tensor(_MID_Y)], dim=-1)
    xy = torch.cat([pairs, mid])
    # March along -z from the front until the first sign change: the frontal surface point.
    z = torch.linspace(0.6, -0.3, 9001)
    grid = torch.cat([xy[:, None, :].expand(-1, z.numel(), 2), z[None, :, None].expand(xy.shape[0], -1, 1)], dim=-1)
    inside = head_sdf(grid.reshape(-1, 3)).reshape(xy.shape[0], -1) < 0
    if not inside.any(dim=1).all():
        raise RuntimeError("an anchor ray misses the analytic head")
    return grid[torch.arange(xy.shape[0]), inside.float().argmax(dim=1)]
