"""The evaluation's face region: samples close to the face area of the scan's FLAME fit.

A point belongs to the face if its nearest face-region FLAME vertex ``v`` (with unit
vertex normal ``n``) satisfies ``|p - v| <= max_distance`` and ``|(p - v) . n| <=
max_plane_distance``. The release uses 0.04 and 0.02 in the nphm frame (10 mm and 5 mm
at the nominal 250 mm per unit), with FLAME fitted to the same scan.
"""
from __future__ import annotations

from typing import Union

import numpy as np
import trimesh
from scipy.spatial import cKDTree

__all__ = ["FaceRegion", "FACE_MAX_DISTANCE", "FACE_MAX_PLANE_DISTANCE"]

FACE_MAX_DISTANCE = 0.04
FACE_MAX_PLANE_DISTANCE = 0.02


class FaceRegion:
    """Membership test for the face region.

    Args:
        vertices: (K, 3) face-region FLAME vertices, nphm frame.
        normals: (K, 3) their vertex normals (normalised here).
        max_distance: point-to-vertex threshold (nphm units).
        max_plane_distance: point-to-tangent-plane threshold (nphm units).
    """

    def __init__(
        self,
        vertices: np.ndarray,
        normals: np.ndarray,
        max_distance: float = FACE_MAX_DISTANCE,
        max_plane_distance: float = FACE_MAX_PLANE_DISTANCE,
    ) -> None:
        self.vertices = np.asarray(vertices, dtype=np.float64)
        normals = np.asarray(normals, dtype=np.float64)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3 or len(self.vertices) == 0:
            raise ValueError(f"face-region vertices must be a non-empty (K, 3) array, got {self.vertices.shape}")
        if normals.shape != self.vertices.shape:
            raise ValueError(f"normals {normals.shape} do not match vertices {self.vertices.shape}")
        norm = np.linalg.norm(normals, axis=1, keepdims=True)
        self.normals = normals / np.where(norm > 0, norm, 1.0)
        self.max_distance = float(max_distance)
        self.max_plane_distance = float(max_plane_distance)
        self._tree = cKDTree(self.vertices)

    @classmethod
    def from_flame(
        cls,
        flame: trimesh.Trimesh,
        region: Union[np.ndarray, list],
        max_distance: float = FACE_MAX_DISTANCE,
        max_plane_distance: float = FACE_MAX_PLANE_DISTANCE,
    ) -> "FaceRegion":
        """Build from a FLAME-topology mesh (nphm frame) and a vertex selection.

        Args:
            flame: the FLAME fit of the scan, nphm frame.
            region: bool mask (V,) or integer vertex indices over the FLAME vertices.
        """
        region = np.asarray(region)
        n_vertices = len(flame.vertices)
        if region.dtype == bool:
            if region.shape != (n_vertices,):
                raise ValueError(f"face-region mask has {region.shape[0]} entries, FLAME mesh has {n_vertices} vertices")
            idx = np.flatnonzero(region)
        else:
            idx = region.astype(np.int64).ravel()
            if len(idx) and (idx.min() < 0 or idx.max() >= n_vertices):
                raise ValueError(f"face-region indices out of range for a mesh with {n_vertices} vertices")
        return cls(
            np.asarray(flame.vertices)[idx],
            np.asarray(flame.vertex_normals)[idx],
            max_distance=max_distance,
            max_plane_distance=max_plane_distance,
        )

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Face-region membership.

        Args:
            points: (N, 3) nphm frame.
        Returns:
            bool (N,).
        """
        points = np.asarray(points, dtype=np.float64)
        if len(points) == 0:
            return np.zeros(0, dtype=bool)
        dist, idx = self._tree.query(points, k=1, workers=-1, distance_upper_bound=self.max_distance * (1 + 1e-9))
        near = np.isfinite(dist)
        keep = np.zeros(len(points), dtype=bool)
        i = idx[near]
        plane = np.abs(np.einsum("nd,nd->n", points[near] - self.vertices[i], self.normals[i]))
        keep[near] = (dist[near] <= self.max_distance) & (plane <= self.max_plane_distance)
        return keep
