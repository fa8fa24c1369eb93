"""Distance primitives of the generator and its ramps.

The primitives are those of :mod:`nphm.analytic`, the one home of the analytic shapes, under
the generator's names; on ``points`` (N, 3) float64 numpy arrays in the nphm frame they return
(N,) float64 arrays, negative inside, positive outside and close to the Euclidean distance near
the surface (exact for spheres and capsules, a first-order approximation for ellipsoids). Only
the zero level set is used by the generator, so approximate distances are enough as long as
their sign is right.

:func:`rotation_xyz` builds the rotations of rotated ellipsoids; :func:`smoothstep` and
:func:`bump` are the ramps and weights of the identity warp and of the expression fields.
"""
from __future__ import annotations

import numpy as np

from nphm.analytic import capsule_sdf as capsule
from nphm.analytic import ellipsoid_sdf as ellipsoid
from nphm.analytic import smooth_subtract, smooth_union
from nphm.analytic import sphere_sdf
from nphm.analytic import vertical_elliptic_cylinder_sdf as vertical_elliptic_cylinder


def sphere(points: np.ndarray, center, radius: float) -> np.ndarray:
    """Sphere of ``radius`` at ``center`` (the generator's argument order)."""
    return sphere_sdf(points, radius, center)


def rotation_xyz(rx: float = 0.0, ry: float = 0.0, rz: float = 0.0) -> np.ndarray:
    """(3, 3) rotation matrix R = Rz @ Ry @ Rx (angles in radians, column-vector convention)."""
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    r_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    r_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return r_z @ r_y @ r_x


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


__all__ = [
    "bump",
    "capsule",
    "ellipsoid",
    "rotation_xyz",
    "smooth_subtract",
    "smooth_union",
    "smoothstep",
    "sphere",
    "vertical_elliptic_cylinder",
]
