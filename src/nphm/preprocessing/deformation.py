"""Deformation supervision: corresponding points of a subject's neutral and posed registrations.

Both registrations share one topology. Restricted to the faces of the face region, for each
direction (neutral -> posed and posed -> neutral) and each ``sigma`` (release: 0.01 and
0.002) ``n_per_direction`` (250 k) points are drawn on the source mesh (area-uniform), moved
along the source face normal by ``N(0, sigma)``, and mapped to the target mesh through the
same face, the same barycentric coordinates and the same offset along the target face normal.
All pairs are stored shuffled as rows ``[x_neutral (3), x_posed (3)]`` float32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from nphm.preprocessing.sampling import face_areas_and_normals, faces_within_mask, random_barycentric, random_faces

SIGMAS_RELEASE = (0.01, 0.002)
N_PER_DIRECTION_RELEASE = 250_000


@dataclass
class CorrespondenceSamples:
    """Pairs from one mesh to the other: ``source (n, 3)``, ``target (n, 3)``, and how they
    were made: ``face_ids (n,)`` (into the full face array), ``bary (n, 3)``, ``offsets (n,)``."""

    source: np.ndarray
    target: np.ndarray
    face_ids: np.ndarray
    bary: np.ndarray
    offsets: np.ndarray


def sample_correspondences(
    source_vertices: np.ndarray,
    target_vertices: np.ndarray,
    faces: np.ndarray,
    n: int,
    sigma: float,
    rng: np.random.Generator,
    face_subset: Optional[np.ndarray] = None,
) -> CorrespondenceSamples:
    """``n`` corresponding points of two meshes with the same topology.

    Args:
        source_vertices, target_vertices: (V, 3) each, nphm frame; faces: (F, 3) shared.
        sigma: standard deviation of the offset along the face normals.
        face_subset: indices of the faces to sample (default: all).
    """
    faces = np.asarray(faces)
    subset = np.arange(len(faces)) if face_subset is None else np.asarray(face_subset)
    if len(subset) == 0:
        raise ValueError("no faces to sample correspondences from")
    src_area, src_normal = face_areas_and_normals(source_vertices, faces[subset])
    _, dst_normal = face_areas_and_normals(target_vertices, faces[subset])
    local = random_faces(src_area, n, rng)
    bary = random_barycentric(n, rng)
    offsets = rng.standard_normal(n) * sigma
    tri = faces[subset][local]
    src = np.einsum("nk,nkc->nc", bary, np.asarray(source_vertices, dtype=np.float64)[tri])
    dst = np.einsum("nk,nkc->nc", bary, np.asarray(target_vertices, dtype=np.float64)[tri])
    src += offsets[:, None] * src_normal[local]
    dst += offsets[:, None] * dst_normal[local]
    return CorrespondenceSamples(src, dst, subset[local], bary, offsets)


def sample_deformation_supervision(
    neutral_vertices: np.ndarray,
    posed_vertices: np.ndarray,
    faces: np.ndarray,
    face_vertex_mask: np.ndarray,
    n_per_direction: int,
    rng: np.random.Generator,
    sigmas: Sequence[float] = SIGMAS_RELEASE,
    n_non_face_per_direction: int = 0,
) -> np.ndarray:
    """Shuffled ``(2 * len(sigmas) * (n_per_direction + n_non_face_per_direction), 6)`` float32
    rows ``[x_neutral, x_posed]``.

    Args:
        neutral_vertices, posed_vertices: (V, 3) registrations (same topology), nphm frame.
        faces: (F, 3) registration faces.
        face_vertex_mask: bool (V,), the face region; faces with all three vertices inside are used.
        n_non_face_per_direction: pairs per direction and sigma drawn, in addition, on the faces
            outside the face region (release: 0, the face region only; then nothing constrains the
            deformation of the back of the head and the neck, which drifts by millimetres where
            the registrations are good enough to say that it should not move).
    """
    neutral_vertices = np.asarray(neutral_vertices, dtype=np.float64)
    posed_vertices = np.asarray(posed_vertices, dtype=np.float64)
    if neutral_vertices.shape != posed_vertices.shape:
        raise ValueError(f"registrations differ in vertex count: {neutral_vertices.shape} vs {posed_vertices.shape}")
    mask = np.asarray(face_vertex_mask, dtype=bool)
    if mask.shape != (len(neutral_vertices),):
        raise ValueError(f"face mask has {mask.shape[0]} entries, the registration {len(neutral_vertices)} vertices")
    subset = faces_within_mask(faces, mask)
    regions = [(subset, n_per_direction)]
    if n_non_face_per_direction > 0:
        regions.append((np.setdiff1d(np.arange(len(faces)), subset), n_non_face_per_direction))
    parts = []
    for sigma in sigmas:
        for region, n in regions:
            fwd = sample_correspondences(neutral_vertices, posed_vertices, faces, n, sigma, rng, region)
            bwd = sample_correspondences(posed_vertices, neutral_vertices, faces, n, sigma, rng, region)
            parts.append(np.concatenate([fwd.source, fwd.target], axis=1))
            parts.append(np.concatenate([bwd.target, bwd.source], axis=1))
    pairs = np.concatenate(parts).astype(np.float32)
    if not np.all(np.isfinite(pairs)):
        raise ValueError("non-finite correspondences (non-finite registration vertices?)")
    return pairs[rng.permutation(len(pairs))]
