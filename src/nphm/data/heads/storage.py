"""Storage form of the identity modes in the shipped asset (written by the converter, read by
the loader).

Deformable vertices keep per-vertex float16 offsets. The rigid bodies inside the head (each
tooth, each eyeball) move by an affine map of their neutral position in every identity mode,
so each (mode, body) is stored as one float32 3x4 matrix ``M`` with
``offset(x) = M @ [x, 1]``. All in the kit's frame (centimetres), kept-vertex numbering.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

#: version of the asset layout (the loader checks it)
FORMAT_VERSION = 1


def rigid_groups(faces: np.ndarray, n_vertices: int, rigid: np.ndarray) -> np.ndarray:
    """Connected components of the ``rigid`` vertices (one per tooth / eyeball).

    Args:
        faces: (F, 3) triangles; n_vertices: V; rigid: (V,) bool, the vertices of rigid parts.

    Returns:
        (V,) int16: component id 0..G-1 of each rigid vertex, -1 elsewhere.
    """
    f = np.asarray(faces, dtype=np.int64)
    f = f[rigid[f].all(axis=1)]
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n_vertices, n_vertices))
    _, comp = connected_components(graph, directed=False)
    groups = np.full(n_vertices, -1, dtype=np.int16)
    _, groups[rigid] = np.unique(comp[rigid], return_inverse=True)
    return groups


def fit_affine(neutral: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Least-squares affine maps with ``offsets[k] ~ [x, 1] @ maps[k].T``.

    Args:
        neutral: (n, 3) neutral vertices of one body; offsets: (K, n, 3) its mode offsets.

    Returns:
        maps: (K, 3, 4) float64.
    """
    h = np.c_[np.asarray(neutral, np.float64), np.ones(len(neutral))]   # (n, 4)
    k, n, _ = offsets.shape
    rhs = np.asarray(offsets, np.float64).transpose(1, 0, 2).reshape(n, k * 3)
    sol, *_ = np.linalg.lstsq(h, rhs, rcond=None)                         # (4, K*3)
    return sol.reshape(4, k, 3).transpose(1, 2, 0)


def apply_affine(neutral: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """Offsets (K, n, 3) float64 of ``maps`` (K, 3, 4) at a body's neutral vertices (n, 3)."""
    h = np.c_[np.asarray(neutral, np.float64), np.ones(len(neutral))]
    return np.einsum("nj,kij->kni", h, np.asarray(maps, np.float64))


def pack_identity(neutral: np.ndarray, modes: np.ndarray, groups: np.ndarray) -> Dict[str, np.ndarray]:
    """Identity modes in storage form.

    Args:
        neutral: (V, 3) cm; modes: (K, V, 3) cm offsets; groups: (V,) rigid body id, -1 = dense.

    Returns:
        ``identity_groups`` (V,) int16, ``identity_modes_dense_cm`` (K, Vd, 3) float16 for the
        vertices with group -1 (in vertex order), ``identity_affine_cm`` (K, G, 3, 4) float32.
    """
    groups = np.asarray(groups, dtype=np.int16)
    n_groups = int(groups.max()) + 1
    maps = np.zeros((len(modes), n_groups, 3, 4))
    for g in range(n_groups):
        maps[:, g] = fit_affine(neutral[groups == g], modes[:, groups == g])
    return {
        "identity_groups": groups,
        "identity_modes_dense_cm": np.asarray(modes)[:, groups < 0].astype(np.float16),
        "identity_affine_cm": maps.astype(np.float32),
    }


def unpack_identity(neutral: np.ndarray, stored: Dict[str, np.ndarray]) -> np.ndarray:
    """Per-vertex identity offsets (K, V, 3) float32, cm, from :func:`pack_identity`'s arrays.

    Args:
        neutral: (V, 3) cm, the stored neutral; stored: the three arrays of the asset.
    """
    groups = np.asarray(stored["identity_groups"])
    dense = stored["identity_modes_dense_cm"]
    maps = stored["identity_affine_cm"]
    out = np.zeros((dense.shape[0], len(neutral), 3), dtype=np.float32)
    out[:, groups < 0] = dense
    for g in range(maps.shape[1]):
        out[:, groups == g] = apply_affine(neutral[groups == g], maps[:, g])
    return out
