"""Fixed topologies of the ICT heads, built once from the model's template and cached.

Three meshes, all driven by the posed (and haired) vertices of the ICT model (nphm frame):

- **scan union**: the model's full mesh (skin, mouth socket, eye sockets, gums and tongue,
  teeth, eyeballs; 24,591 vertices), the surface a scanner may see; the scan keeps the
  visible part of its Loop subdivision (:mod:`.subdivision`).
- **registration**: the skin (face + head and neck, with hair displacement where there is
  hair), the mouth socket (the inside of the lips and the mouth cavity, so that an open jaw
  shows a cavity rather than a hole) and both eyeballs (they close the eye openings):
  16,434 vertices. Skin and socket keep the model's vertex numbers (0-13,293), so the model's
  anchor, landmark and face-region indices are registration indices as they are; the
  eyeballs follow.
- **FLAME-like**: a quadric decimation of the template's skin and eyeballs (~5,000 vertices,
  like FLAME's 5,023), each vertex carried by a fixed barycentric embedding in the
  registration (so it follows identity, expression and hair exactly); the three throat-plane
  vertices are embedded exactly at the model's throat-plane vertices.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, Tuple

import numpy as np
import point_cloud_utils as pcu
import scipy.sparse as sp

from nphm.data.heads import IctHeadModel, load_ict_model
from nphm.data.synthetic.ict.subdivision import LoopSubdivision, loop_subdivision

#: model regions of the registration, in registration order
REGISTRATION_PARTS: Tuple[str, ...] = ("face", "head_and_neck", "mouth_socket", "eyeball_left", "eyeball_right")
#: fraction of the faces removed by the FLAME-like decimation: (skin, each eyeball)
FLAME_REDUCTION = (0.62, 0.77)
#: iterations of the normal smoothing used for the hair offsets
NORMAL_SMOOTHING_STEPS = 20


@dataclass(frozen=True, eq=False)
class IctTopology:
    """Index tables of the three meshes (see the module docstring).

    Attributes:
        n_model_vertices: V, vertices of the model (and of the scan union).
        union_faces: (F, 3) int64 model faces (the scan union).
        union_subdivision: one Loop step of the union.
        union_inner: (F,) bool faces of the inner parts (all but the skin): mouth socket, eye
            sockets, gums and tongue, teeth, eyeballs.
        openings: model vertex indices (n_k,) of the rims of the skin's openings (mouth, left
            eye, right eye): the inner parts can only be seen through them.
        registration_vertices: (V_reg,) model vertex of each registration vertex.
        registration_faces: (F_reg, 3) int64 in registration numbering.
        registration_parts: part name -> (n,) registration vertex indices.
        skin: (V_skin,) model (= registration) indices of the skin (the first V_skin).
        skin_faces: (F_skin, 3) faces of the skin, same numbering.
        skin_smoothing: (V_skin, V_skin) csr, row-normalised (adjacency + identity) of the skin.
        flame_faces: (F_flame, 3) int64.
        flame_embedding: (V_flame, V_reg) csr barycentric weights: flame = embedding @ registration.
        flame_face_region: bool (V_flame,) FLAME-like vertices in the face region.
        flame_throat: (3,) FLAME-like vertices at the model's throat-plane vertices.
    """

    n_model_vertices: int
    union_faces: np.ndarray
    union_subdivision: LoopSubdivision
    union_inner: np.ndarray
    openings: Tuple[np.ndarray, ...]
    registration_vertices: np.ndarray
    registration_faces: np.ndarray
    registration_parts: Dict[str, np.ndarray]
    skin: np.ndarray
    skin_faces: np.ndarray
    skin_smoothing: sp.csr_matrix
    flame_faces: np.ndarray
    flame_embedding: sp.csr_matrix
    flame_face_region: np.ndarray
    flame_throat: np.ndarray

    @property
    def n_registration(self) -> int:
        return int(len(self.registration_vertices))

    @property
    def n_flame(self) -> int:
        return int(self.flame_embedding.shape[0])

    def registration(self, union_vertices: np.ndarray) -> np.ndarray:
        """(V_reg, 3) registration vertices of the union's vertices (V, 3)."""
        return np.asarray(union_vertices)[self.registration_vertices]

    def flame(self, registration_vertices: np.ndarray) -> np.ndarray:
        """(V_flame, 3) FLAME-like vertices of registration vertices (V_reg, 3)."""
        return np.asarray(self.flame_embedding @ np.asarray(registration_vertices, dtype=np.float64))


def faces_within(faces: np.ndarray, vertices: np.ndarray, n_vertices: int) -> np.ndarray:
    """The faces (F', 3) of ``faces`` whose corners all lie in ``vertices``, renumbered to the
    positions in ``vertices``."""
    index = np.full(n_vertices, -1, dtype=np.int64)
    index[vertices] = np.arange(len(vertices))
    mapped = index[faces]
    return mapped[(mapped >= 0).all(axis=1)]


def mesh_edges(faces: np.ndarray) -> np.ndarray:
    """(E, 2) int64 unique edges (sorted pairs) of the triangles ``faces`` (F, 3)."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0).astype(np.int64)


def edge_graph(edges: np.ndarray, weights: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """Symmetric (V, V) csr matrix with ``weights`` (E,) on the ``edges`` (E, 2) and their reverses."""
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    return sp.csr_matrix((np.concatenate([weights, weights]), (rows, cols)), shape=(n_vertices, n_vertices))


def smoothing_matrix(faces: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """Row-normalised (adjacency + identity) (V, V) of the mesh ``faces``: one uniform
    Laplacian smoothing step is ``matrix @ values``."""
    edges = mesh_edges(faces)
    a = edge_graph(edges, np.ones(len(edges)), n_vertices) + sp.identity(n_vertices, format="csr")
    return (sp.diags(1.0 / np.asarray(a.sum(axis=1)).ravel()) @ a).tocsr()


def _rim(model: IctHeadModel, socket: str) -> np.ndarray:
    """(n,) skin vertices of the faces shared by the skin and the region ``socket``."""
    skin = np.zeros(model.n_vertices, dtype=bool)
    skin[model.regions["skin"]] = True
    inside = np.zeros(model.n_vertices, dtype=bool)
    inside[model.regions[socket]] = True
    shared = model.faces[skin[model.faces].any(axis=1) & inside[model.faces].any(axis=1)]
    rim = np.unique(shared.ravel())
    return rim[skin[rim]]


def _decimate(vertices: np.ndarray, faces: np.ndarray, reduction: float) -> Tuple[np.ndarray, np.ndarray]:
    """Quadric decimation (VTK) of a triangle mesh: ``(vertices (n, 3), faces (m, 3))``."""
    from nphm.pictures.base import polydata

    out = polydata(vertices, faces).decimate(reduction, volume_preservation=True)
    return np.asarray(out.points, dtype=np.float64), out.faces.reshape(-1, 4)[:, 1:].astype(np.int64)


def _embedding(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, n_columns: int,
               columns: np.ndarray) -> sp.csr_matrix:
    """(n, n_columns) barycentric weights of the closest points of ``points`` on the mesh
    (``vertices``, ``faces`` numbered locally; local vertex i is column ``columns[i]``)."""
    _, fid, bc = pcu.closest_points_on_mesh(np.ascontiguousarray(points), np.ascontiguousarray(vertices),
                                            np.ascontiguousarray(faces, dtype=np.int32))
    bc = np.clip(np.asarray(bc, dtype=np.float64), 0.0, None)
    bc /= bc.sum(axis=1, keepdims=True)
    rows = np.repeat(np.arange(len(points)), 3)
    return sp.csr_matrix((bc.ravel(), (rows, columns[faces[fid]].ravel())), shape=(len(points), n_columns))


def _flame_like(model: IctHeadModel, reg_vertices: np.ndarray, reg_faces: np.ndarray,
                parts: Dict[str, np.ndarray]) -> Tuple[np.ndarray, sp.csr_matrix, np.ndarray]:
    """Decimated skin + eyeballs: ``(faces, embedding into the registration, throat vertices)``."""
    template = model.neutral[reg_vertices]
    n_reg = len(reg_vertices)
    blocks, faces, offset = [], [], 0
    throat = np.zeros(3, dtype=np.int64)
    for names, reduction in ((("face", "head_and_neck"), FLAME_REDUCTION[0]), (("eyeball_left",), FLAME_REDUCTION[1]),
                             (("eyeball_right",), FLAME_REDUCTION[1])):
        local = np.sort(np.concatenate([parts[n] for n in names]))
        local_faces = faces_within(reg_faces, local, n_reg)
        points, dec_faces = _decimate(template[local], local_faces, reduction)
        emb = _embedding(points, template[local], local_faces, n_reg, local)
        if "face" in names:
            # the three throat-plane vertices: the nearest decimated vertices sit exactly on them
            target = template[model.throat_plane_vertices]
            nearest = np.argmin(((points[None] - target[:, None]) ** 2).sum(-1), axis=1)
            emb = emb.tolil()
            emb[nearest] = 0.0
            emb[nearest, model.throat_plane_vertices] = 1.0
            emb = emb.tocsr()
            emb.eliminate_zeros()
            throat = nearest + offset
        blocks.append(emb)
        faces.append(dec_faces + offset)
        offset += len(points)
    return np.concatenate(faces), sp.vstack(blocks).tocsr(), throat


@lru_cache(maxsize=1)
def get_topology() -> IctTopology:
    """The topologies of the shipped ICT model (built once per process, about a second)."""
    model = load_ict_model()
    n = model.n_vertices
    parts_model = [model.regions[p] for p in REGISTRATION_PARTS]
    reg_vertices = np.concatenate(parts_model).astype(np.int64)
    bounds = np.cumsum([0] + [len(p) for p in parts_model])
    parts = {name: np.arange(bounds[i], bounds[i + 1]) for i, name in enumerate(REGISTRATION_PARTS)}
    parts["skin"] = np.concatenate([parts["face"], parts["head_and_neck"]])
    parts["eyeballs"] = np.concatenate([parts["eyeball_left"], parts["eyeball_right"]])
    if not np.array_equal(reg_vertices[: bounds[3]], np.arange(bounds[3])):
        raise ValueError("the ICT model's skin and mouth socket are expected to be its first vertices")
    reg_faces = faces_within(model.faces, reg_vertices, n)
    skin = parts["skin"]
    skin_faces = faces_within(reg_faces, skin, len(reg_vertices))
    flame_faces, embedding, throat = _flame_like(model, reg_vertices, reg_faces, parts)
    face_mask = np.zeros(len(reg_vertices), dtype=bool)
    face_mask[model.face_region] = True
    dominant = np.asarray(embedding.argmax(axis=1)).ravel()
    return IctTopology(
        n_model_vertices=n,
        union_faces=np.asarray(model.faces, dtype=np.int64),
        union_subdivision=loop_subdivision(model.faces, n),
        union_inner=~np.isin(model.faces, model.regions["skin"]).all(axis=1),
        openings=tuple(_rim(model, socket) for socket in ("mouth_socket", "eye_socket_left", "eye_socket_right")),
        registration_vertices=reg_vertices,
        registration_faces=reg_faces,
        registration_parts=parts,
        skin=skin,
        skin_faces=skin_faces,
        skin_smoothing=smoothing_matrix(skin_faces, len(skin)),
        flame_faces=flame_faces,
        flame_embedding=embedding,
        flame_face_region=face_mask[dominant],
        flame_throat=throat,
    )
