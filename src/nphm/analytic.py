"""Analytic signed distance functions: the one home of the project's analytic shapes.

Primitives (sphere, ellipsoid, capsule, elliptic cylinder), smooth blends, a simple head for the
benchmarks (:func:`head_sdf`) and its facial keypoints. Built on by the synthetic dataset
generator (:mod:`nphm.data.synthetic`, float64 numpy arrays) and by the toy models of the tests
(torch, with gradients).

The primitives and blends take torch tensors or numpy arrays and return the type they are
given: points (..., 3) in the nphm frame (+y up, face towards +z, +x to the subject's left) to
SDF values (...,), negative inside, positive outside and close to the Euclidean distance near
the surface (exact for spheres and capsules, first order for ellipsoids). Centres, radii and
rotations may be sequences, arrays or tensors that broadcast against the points; tensors keep
their gradients.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch

#: points, distances: a torch tensor or a numpy array (the result has the same type)
Array = Union[torch.Tensor, np.ndarray]
#: a constant parameter: a sequence of floats, an array or a tensor
Vector = Union[Sequence[float], np.ndarray, torch.Tensor]

#: lower bound of the gradient norm ``k1`` in :func:`ellipsoid_sdf` (keeps its centre finite)
_ELLIPSOID_EPS = 1e-12


def _xp(x: Array):
    """The array module of ``x``: ``torch`` for tensors, ``numpy`` otherwise."""
    return torch if isinstance(x, torch.Tensor) else np


def _as(value: Vector, like: Array) -> Array:
    """``value`` as an array of the type, dtype (and device) of ``like``."""
    if isinstance(like, torch.Tensor):
        return torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return np.asarray(value, dtype=like.dtype)


def _norm(v: Array) -> Array:
    """Euclidean norm (...,) over the last axis of ``v`` (...,  D)."""
    if isinstance(v, torch.Tensor):
        return torch.linalg.vector_norm(v, dim=-1)
    return np.sqrt(np.einsum("...i,...i->...", v, v))


def sphere_sdf(points: Array, radius: float = 0.3, center: Vector = (0.0, 0.0, 0.0)) -> Array:
    """Exact SDF of a sphere."""
    return _norm(points - _as(center, points)) - radius


def ellipsoid_sdf(points: Array, center: Vector, radii: Vector, rotation: Optional[Vector] = None) -> Array:
    """Approximate ellipsoid SDF ``k0 (k0 - 1) / k1`` (exact on the surface, |grad| ~ 1 near it).

    Args:
        points: (..., D) with D = 3 (or 2 for an ellipse in a plane).
        center: (D,) or (..., D); radii: semi-axes (D,) or (..., D).
        rotation: (D, D) maps the ellipsoid's local axes to the world (world = R @ local);
            default axis-aligned.
    """
    q = points - _as(center, points)
    if rotation is not None:
        q = q @ _as(rotation, points)  # world -> local for row vectors: (R^T q^T)^T
    r = _as(radii, points)
    a = q / r
    k0 = _norm(a)
    k1 = _norm(a / r)
    return k0 * (k0 - 1.0) / _xp(points).clip(k1, _ELLIPSOID_EPS, None)


def capsule_sdf(points: Array, a: Vector, b: Vector, radius: float, radius_b: Optional[float] = None) -> Array:
    """SDF of the segment a-b (each (3,)) thickened by ``radius``; exact for a constant radius.

    With ``radius_b`` the radius varies linearly from ``radius`` at ``a`` to ``radius_b`` at
    ``b`` (a tapered capsule; the distance is then approximate).
    """
    a_t, b_t = _as(a, points), _as(b, points)
    ab = b_t - a_t
    t = _xp(points).clip((points - a_t) @ ab / (ab @ ab), 0.0, 1.0)
    r = radius if radius_b is None else radius + (radius_b - radius) * t
    return _norm(points - (a_t + t[..., None] * ab)) - r


def vertical_elliptic_cylinder_sdf(points: Array, center_xz: Vector, radii_xz: Vector, top_y: float) -> Array:
    """Elliptic cylinder along y with axis ``center_xz`` (2,) and semi-axes ``radii_xz`` (2,),
    infinite downwards and closed by the plane ``y = top_y``."""
    side = ellipsoid_sdf(points[..., [0, 2]], center_xz, radii_xz)
    return _xp(points).maximum(side, points[..., 1] - top_y)


def smooth_union(d1: Array, d2: Array, k: float) -> Array:
    """Polynomial smooth minimum of two SDFs with blend radius ``k`` (the minimum for ``k <= 0``)."""
    xp = _xp(d1)
    if k <= 0:
        return xp.minimum(d1, d2)
    h = xp.clip(0.5 + 0.5 * (d2 - d1) / k, 0.0, 1.0)
    return d2 + (d1 - d2) * h - k * h * (1.0 - h)


def smooth_subtract(d1: Array, d2: Array, k: float) -> Array:
    """The solid ``d1`` minus the solid ``d2`` (smooth maximum of ``d1`` and ``-d2``)."""
    return -smooth_union(-d1, d2, k)


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
