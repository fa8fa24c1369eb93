"""Random sampling on triangle meshes: area-uniform points, barycentric coordinates, normals.

Every function takes plain arrays (``vertices (V, 3)``, ``faces (F, 3)`` int) so that the same
code serves raw scans, registrations and sub-meshes given by a face subset.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

#: Normals of faces whose cross product is shorter than this are set to zero.
_DEGENERATE = 1e-20


def face_areas_and_normals(vertices: np.ndarray, faces: np.ndarray) -> tuple:
    """Areas (F,) and unit normals (F, 3) of the triangles (zero normal for degenerate faces)."""
    tri = np.asarray(vertices, dtype=np.float64)[np.asarray(faces)]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(cross, axis=1)
    normals = np.zeros_like(cross)
    ok = length > _DEGENERATE
    normals[ok] = cross[ok] / length[ok, None]
    return 0.5 * length, normals


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3); vertices without faces get a zero normal."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces)
    tri = vertices[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # |cross| = 2 * area
    acc = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(acc, faces[:, k], cross)
    return _unit(acc)


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.divide(v, n, out=np.zeros_like(v), where=n > _DEGENERATE)


def random_barycentric(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 3) barycentric coordinates uniform over a triangle (square-root trick)."""
    r1 = np.sqrt(rng.random(n))
    r2 = rng.random(n)
    return np.stack([1.0 - r1, r1 * (1.0 - r2), r1 * r2], axis=1)


def random_faces(areas: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) face indices drawn with probability proportional to ``areas``."""
    total = float(areas.sum())
    if not np.isfinite(total) or total <= 0:
        raise ValueError("cannot sample a mesh with zero (or non-finite) total area")
    cdf = np.cumsum(areas, dtype=np.float64)
    return np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(areas) - 1)


def interpolate(values: np.ndarray, faces: np.ndarray, face_ids: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Barycentric interpolation of per-vertex ``values`` (V, C) at ``(face_ids (n,), bary (n, 3))``."""
    corners = np.asarray(values)[np.asarray(faces)[face_ids]]  # (n, 3, C)
    return np.einsum("nk,nkc->nc", bary, corners)


@dataclass
class SurfaceSamples:
    """Points on a mesh: ``points (n, 3)``, ``normals (n, 3)`` (unit, interpolated from the
    vertex normals), ``face_ids (n,)`` and ``bary (n, 3)``."""

    points: np.ndarray
    normals: np.ndarray
    face_ids: np.ndarray
    bary: np.ndarray


def sample_surface(
    vertices: np.ndarray,
    faces: np.ndarray,
    n: int,
    rng: np.random.Generator,
    normals_per_vertex: Optional[np.ndarray] = None,
    areas: Optional[np.ndarray] = None,
) -> SurfaceSamples:
    """``n`` points uniformly distributed over the surface (by area).

    Args:
        vertices: (V, 3); faces: (F, 3).
        normals_per_vertex: (V, 3) normals to interpolate (default: area-weighted vertex normals).
        areas: (F,) precomputed face areas (for repeated calls).
    Returns:
        :class:`SurfaceSamples`; normals are re-normalised after interpolation.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces)
    if areas is None:
        areas, _ = face_areas_and_normals(vertices, faces)
    if normals_per_vertex is None:
        normals_per_vertex = vertex_normals(vertices, faces)
    face_ids = random_faces(areas, n, rng)
    bary = random_barycentric(n, rng)
    points = interpolate(vertices, faces, face_ids, bary)
    normals = _unit(interpolate(normals_per_vertex, faces, face_ids, bary))
    return SurfaceSamples(points, normals, face_ids, bary)


def faces_within_mask(faces: np.ndarray, vertex_mask: np.ndarray) -> np.ndarray:
    """Indices of the faces whose three vertices all lie in ``vertex_mask`` (bool (V,))."""
    vertex_mask = np.asarray(vertex_mask, dtype=bool)
    return np.flatnonzero(vertex_mask[np.asarray(faces)].all(axis=1))
