"""Identity supervision: oriented surface samples of each subject's neutral-open scan.

For every subject (release values in brackets): sample ``n_samples`` points (25 M) uniformly
on the raw scan with normals interpolated from the vertex normals, drop the points below the
neck plane, label a point "face" when its nearest face-region vertex of the registration is
closer than ``face_radius`` (0.2 nphm units), keep every face point and ``n_non_face`` (1 M)
non-face points drawn with replacement. Arrays ``[x, y, z, nx, ny, nz]`` (nphm frame) are
stored by :func:`nphm.preprocessing.storage.write_identity`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from scipy.spatial import cKDTree

from nphm.preprocessing.sampling import face_areas_and_normals, sample_surface, vertex_normals

#: Release values.
N_SAMPLES_RELEASE = 25_000_000
N_NON_FACE_RELEASE = 1_000_000
FACE_RADIUS = 0.2
#: Points sampled per block, to bound memory for the release's 25 M samples.
BLOCK = 2_000_000


@dataclass
class IdentitySamples:
    """``face (N_f, 6)`` and ``non_face (N_n, 6)`` float32 rows ``[point, normal]`` (nphm frame)."""

    face: np.ndarray
    non_face: np.ndarray
    n_sampled: int
    n_kept: int


def sample_identity_supervision(
    scan_vertices: np.ndarray,
    scan_faces: np.ndarray,
    face_region_vertices: np.ndarray,
    keep_fn: Optional[Callable[[np.ndarray], np.ndarray]],
    n_samples: int,
    n_non_face: int,
    rng: np.random.Generator,
    face_radius: float = FACE_RADIUS,
    block: int = BLOCK,
) -> IdentitySamples:
    """Oriented surface samples of one scan, split into face and non-face points.

    Args:
        scan_vertices: (V, 3) scan vertices, nphm frame; scan_faces: (F, 3).
        face_region_vertices: (R, 3) registration vertices inside the face region (nphm frame).
        keep_fn: points (n, 3) -> bool (n,), True above the neck plane (None keeps all).
        n_samples: points sampled on the scan before the neck cut.
        n_non_face: non-face points kept (drawn with replacement from all non-face points).
        face_radius: a point is "face" if its nearest face-region vertex is closer than this.
    Raises:
        ValueError: no point survives the neck cut, or there are no non-face points to draw from
            while ``n_non_face > 0``.
    """
    if len(face_region_vertices) == 0:
        raise ValueError("the face region has no vertices")
    areas, _ = face_areas_and_normals(scan_vertices, scan_faces)
    normals_v = vertex_normals(scan_vertices, scan_faces)
    tree = cKDTree(np.asarray(face_region_vertices, dtype=np.float64))
    face_parts, non_face_parts = [], []
    n_kept = 0
    for start in range(0, n_samples, block):
        count = min(block, n_samples - start)
        s = sample_surface(scan_vertices, scan_faces, count, rng, normals_per_vertex=normals_v, areas=areas)
        rows = np.concatenate([s.points, s.normals], axis=1)
        if keep_fn is not None:
            rows = rows[np.asarray(keep_fn(s.points), dtype=bool)]
        n_kept += len(rows)
        dist, _ = tree.query(rows[:, :3], distance_upper_bound=face_radius)
        is_face = dist < face_radius
        face_parts.append(rows[is_face].astype(np.float32))
        non_face_parts.append(rows[~is_face].astype(np.float32))
    if n_kept == 0:
        raise ValueError("no sampled point lies above the neck plane")
    face = np.concatenate(face_parts)
    non_face_all = np.concatenate(non_face_parts)
    if n_non_face > 0 and len(non_face_all) == 0:
        raise ValueError(f"no non-face points (every point is within {face_radius} of the face region)")
    non_face = non_face_all[rng.integers(0, len(non_face_all), size=n_non_face)] if n_non_face > 0 else \
        non_face_all[:0]
    if len(face) == 0:
        raise ValueError(f"no face points (no sample within {face_radius} of the face region)")
    return IdentitySamples(face=face, non_face=non_face, n_sampled=n_samples, n_kept=n_kept)
