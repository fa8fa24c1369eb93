"""Approximate signed distance primitives and smooth blending, vectorised over points.

All functions take ``points`` (N, 3) and return (N,) values that are negative inside,
positive outside and close to the Euclidean distance near the surface (exact for spheres
and capsules, a first-order approximation for ellipsoids). Only the zero level set is used
by the generator, so approximate distances are enough as long as their sign is right.
"""
from __future__ import annotations

import numpy as np

_EPS = 1e-12


def smooth_union(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum of two distance fields with blend radius ``k`` (>= 0)."""
    if k <= 0:
        return np.minimum(a, b)
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def smooth_subtract(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """``a`` minus the solid ``b`` (smooth maximum of ``a`` and ``-b``)."""
    return -smooth_union(-a, b, k)


def rotation_xyz(rx: float = 0.0, ry: float = 0.0, rz: float = 0.0) -> np.ndarray:
    """(3, 3) rotation matrix R = Rz @ Ry @ Rx (angles in radians, column-vector convention)."""
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    r_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    r_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return r_z @ r_y @ r_x


def ellipsoid(points: np.ndarray, center, radii, rotation: np.ndarray | None = None) -> np.ndarray:
    """Ellipsoid with semi-axes ``radii`` (3,) at ``center`` (3,).

    ``rotation`` (3, 3) maps the ellipsoid's local axes to the world (world = R @ local).
    """
    q = points - np.asarray(center, dtype=np.float64)
    if rotation is not None:
        q = q @ rotation  # world -> local for row vectors: (R^T q^T)^T
    r = np.asarray(radii, dtype=np.float64)
    a = q / r
    b = a / r
    k0 = np.sqrt(np.einsum("ij,ij->i", a, a))
    k1 = np.sqrt(np.einsum("ij,ij->i", b, b))
    return k0 * (k0 - 1.0) / np.maximum(k1, _EPS)


def _norm(v: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->i", v, v))


def sphere(points: np.ndarray, center, radius: float) -> np.ndarray:
    """Sphere of ``radius`` at ``center``."""
    return _norm(points - np.asarray(center, dtype=np.float64)) - radius


def capsule(points: np.ndarray, a, b, radius_a: float, radius_b: float | None = None) -> np.ndarray:
    """Segment ``a``-``b`` thickened by a radius that varies linearly from ``radius_a`` to
    ``radius_b`` (a tapered capsule; the distance is approximate when the radii differ)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    radius_b = radius_a if radius_b is None else radius_b
    ab = b - a
    h = np.clip((points - a) @ ab / float(ab @ ab), 0.0, 1.0)
    closest = a + h[:, None] * ab
    return _norm(points - closest) - (radius_a + (radius_b - radius_a) * h)


def vertical_elliptic_cylinder(points: np.ndarray, center_xz, radii_xz, top_y: float) -> np.ndarray:
    """Elliptic cylinder along y, infinite downwards and closed by the plane ``y = top_y``."""
    q = np.stack([points[:, 0] - center_xz[0], points[:, 2] - center_xz[1]], axis=-1)
    r = np.asarray(radii_xz, dtype=np.float64)
    a = q / r
    b = a / r
    k0 = np.sqrt(np.einsum("ij,ij->i", a, a))
    k1 = np.sqrt(np.einsum("ij,ij->i", b, b))
    side = k0 * (k0 - 1.0) / np.maximum(k1, _EPS)
    return np.maximum(side, points[:, 1] - top_y)


def smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """C1 ramp: 0 for x <= lo, 1 for x >= hi (hi may be smaller than lo for a falling ramp)."""
    t = np.clip((np.asarray(x, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def bump(points: np.ndarray, center, radii) -> np.ndarray:
    """Compactly supported smooth bump (1 - r^2)^3 of the scaled distance r = |(p - c) / radii|;
    exactly 0 outside the ellipsoid with semi-axes ``radii``, 1 at the centre."""
    q = (points - np.asarray(center, dtype=np.float64)) / np.asarray(radii, dtype=np.float64)
    r2 = np.einsum("ij,ij->i", q, q)
    return np.clip(1.0 - r2, 0.0, None) ** 3
