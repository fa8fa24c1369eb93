"""Loop subdivision as a fixed sparse linear map, built once per topology.

One Loop step maps the vertices ``v`` (V, 3) of a triangle mesh to ``matrix @ v`` (V + E, 3):
the V old vertices (repositioned) first, then one new vertex per edge, in the order of
:attr:`LoopSubdivision.edges`. Each face (a, b, c) becomes four: (a, ab, ca), (ab, b, bc),
(ca, bc, c), (ab, bc, ca), so fine face ``4 k + i`` lies inside coarse face ``k``.
Boundary edges and vertices use the crease rules (1/2, 1/2 and 1/8, 3/4, 1/8), so open
boundaries stay put up to smoothing along them. The map is linear, so posing before or after
subdividing gives the same surface.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class LoopSubdivision:
    """One Loop step of a fixed topology.

    Attributes:
        matrix: (V + E, V) csr float64: fine vertices = ``matrix @ coarse vertices``.
        faces: (4 F, 3) int64 fine faces; fine face ``4 k + i`` comes from coarse face ``k``.
        edges: (E, 2) int64 sorted coarse edges; edge ``j`` makes fine vertex ``V + j``.
    """

    matrix: sp.csr_matrix
    faces: np.ndarray
    edges: np.ndarray

    @property
    def parent(self) -> np.ndarray:
        """(4 F,) coarse face of each fine face."""
        return np.repeat(np.arange(len(self.faces) // 4), 4)

    def apply(self, vertices: np.ndarray) -> np.ndarray:
        """Fine vertices (V + E, 3) of coarse ``vertices`` (V, 3)."""
        return np.asarray(self.matrix @ np.asarray(vertices, dtype=np.float64))


def _loop_beta(valence: np.ndarray) -> np.ndarray:
    """Loop's weight of each neighbour of an interior vertex of ``valence`` neighbours."""
    n = np.maximum(valence, 1).astype(np.float64)
    return (5.0 / 8.0 - (3.0 / 8.0 + 0.25 * np.cos(2.0 * np.pi / n)) ** 2) / n


def loop_subdivision(faces: np.ndarray, n_vertices: int) -> LoopSubdivision:
    """The Loop step of the mesh ``faces`` (F, 3) over ``n_vertices`` vertices.

    The mesh must be edge-manifold (every edge in one or two faces); unreferenced vertices
    are kept unchanged.
    """
    faces = np.asarray(faces, dtype=np.int64)
    n_faces = len(faces)
    corner_edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])  # (3F, 2)
    opposite = np.concatenate([faces[:, 2], faces[:, 0], faces[:, 1]])
    edges, edge_of_corner, count = np.unique(np.sort(corner_edges, axis=1), axis=0, return_inverse=True,
                                             return_counts=True)
    edge_of_corner = edge_of_corner.ravel()
    if count.max() > 2:
        raise ValueError("loop_subdivision needs an edge-manifold mesh (an edge has more than two faces)")
    n_edges = len(edges)
    boundary = count == 1

    # new edge vertices: 3/8 (a + b) + 1/8 (c + d) inside, 1/2 (a + b) on the boundary
    end_w = np.where(boundary, 0.5, 0.375)
    rows = [np.repeat(np.arange(n_edges), 2), edge_of_corner[~boundary[edge_of_corner]]]
    cols = [edges.ravel(), opposite[~boundary[edge_of_corner]]]
    vals = [np.repeat(end_w, 2), np.full(int((~boundary[edge_of_corner]).sum()), 0.125)]

    # old vertices: Loop's beta rule inside; 3/4 v + 1/8 (b1 + b2) on the boundary
    neighbours = np.concatenate([edges, edges[:, ::-1]])  # (2E, 2): (vertex, neighbour)
    valence = np.bincount(neighbours[:, 0], minlength=n_vertices)
    on_boundary = np.zeros(n_vertices, dtype=bool)
    on_boundary[edges[boundary].ravel()] = True
    n_boundary_nb = np.bincount(edges[boundary].ravel(), minlength=n_vertices)
    crease = on_boundary & (n_boundary_nb == 2)
    fixed = (on_boundary & ~crease) | (valence == 0)
    beta = _loop_beta(valence)
    inner_nb = neighbours[~on_boundary[neighbours[:, 0]]]
    boundary_nb = np.concatenate([edges[boundary], edges[boundary][:, ::-1]])
    boundary_nb = boundary_nb[crease[boundary_nb[:, 0]]]
    self_w = np.where(crease, 0.75, 1.0 - valence * beta)
    self_w[fixed] = 1.0
    old_rows = [np.arange(n_vertices), inner_nb[:, 0], boundary_nb[:, 0]]
    old_cols = [np.arange(n_vertices), inner_nb[:, 1], boundary_nb[:, 1]]
    old_vals = [self_w, beta[inner_nb[:, 0]], np.full(len(boundary_nb), 0.125)]

    matrix = sp.coo_matrix(
        (np.concatenate(old_vals + vals),
         (np.concatenate(old_rows + [r + n_vertices for r in rows]), np.concatenate(old_cols + cols))),
        shape=(n_vertices + n_edges, n_vertices)).tocsr()

    mid = n_vertices + edge_of_corner.reshape(3, n_faces).T  # (F, 3): edges ab, bc, ca
    a, b, c = faces.T
    ab, bc, ca = mid.T
    fine = np.stack([np.stack([a, ab, ca], 1), np.stack([ab, b, bc], 1), np.stack([ca, bc, c], 1),
                     np.stack([ab, bc, ca], 1)], axis=1).reshape(-1, 3)
    return LoopSubdivision(matrix=matrix, faces=fine, edges=edges)
