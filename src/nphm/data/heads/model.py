"""The shipped ICT head model (``ict_light.npz``) in the real nphm frame.

Every array of :class:`IctHeadModel` is in the nphm frame (one unit = 250 mm; the frame of the
release's mean anchors): the kit's centimetres are mapped by the similarity ``to_nphm``
(:class:`nphm.data.frames.Similarity`, ``x_nphm = s R x_cm + t``; offsets ``s R d_cm``). A head is
``neutral + sum_i w_i identity_modes[i] + sum_j e_j expression_shapes[j]`` with ``w_i ~ N(0, 1)``
(the kit's identity sampler) and expression weights in [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from nphm.data.frames import Similarity
from nphm.data.heads.storage import FORMAT_VERSION, unpack_identity
from nphm.utils.io import PathLike

#: the asset, shipped as package data beside this module
ASSET_PATH = Path(__file__).with_name("ict_light.npz")
#: the release's mean anchors (39, 3), nphm frame, release order (MIT-licensed release data)
RELEASE_ANCHORS_PATH = Path(__file__).with_name("release_anchors39_mean_nphm.npy")

ExpressionWeights = Union[np.ndarray, Sequence[float], Mapping[str, float], None]


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class IctHeadModel:
    """ICT Face Model Light (skin, sockets, gums/tongue, teeth, eyeballs), nphm frame.

    Attributes:
        neutral: (V, 3) float64, the population mean (the identity modes have zero mean).
        faces: (F, 3) int64 triangles of all kept parts.
        identity_modes: (K, V, 3) float32 offsets per unit weight (K = 100).
        expression_shapes: (E, V, 3) float32 offsets at weight 1 (E = 57), defined on the
            neutral identity and added unchanged to any identity.
        expression_names: (E,) ARKit-style names (``jawOpen``, ``mouthSmile_L``, ...).
        regions: name -> (n,) int64 vertex indices: the kit's regions (``face``,
            ``head_and_neck``, ``mouth_socket``, ``eye_socket_left/right``,
            ``gums_and_tongue``, ``teeth``, ``eyeball_left/right``) plus ``skin`` (face + head
            and neck), ``narrow_face`` (the kit's narrow face area) and ``face_region`` (the
            face region of the project, = ``narrow_face``).
        region_labels: (V,) int8 index into ``region_names``.
        region_names: names of the kit's region table, in kit order.
        landmarks68: (68,) int64 vertex indices, iBUG / Multi-PIE order.
        anchors39: (39,) int64 vertex indices of the NPHM anchors, release order.
        anchor_meanings: (39,) what facial point each anchor is.
        throat_plane_vertices: (3,) int64; neck cut plane through them (origin = first,
            normal = cross(v2 - v1, v3 - v1), the positive side is kept).
        to_nphm: the similarity kit (cm) -> nphm frame.
        kit_vertex_index: (V,) int64 vertex index of each vertex in the kit's full mesh.
    """

    neutral: np.ndarray
    faces: np.ndarray
    identity_modes: np.ndarray
    expression_shapes: np.ndarray
    expression_names: Tuple[str, ...]
    regions: Mapping[str, np.ndarray]
    region_labels: np.ndarray
    region_names: Tuple[str, ...]
    landmarks68: np.ndarray
    anchors39: np.ndarray
    anchor_meanings: Tuple[str, ...]
    throat_plane_vertices: np.ndarray
    to_nphm: Similarity
    kit_vertex_index: np.ndarray

    @property
    def n_vertices(self) -> int:
        return int(self.neutral.shape[0])

    @property
    def n_identity(self) -> int:
        return int(self.identity_modes.shape[0])

    @property
    def n_expressions(self) -> int:
        return int(self.expression_shapes.shape[0])

    @property
    def face_region(self) -> np.ndarray:
        """(n,) vertex indices of the face region (the kit's narrow face area)."""
        return self.regions["face_region"]

    def expression_vector(self, weights: ExpressionWeights) -> np.ndarray:
        """Expression weights as an (E,) or (B, E) float64 array.

        Args:
            weights: None (neutral), an array (E,) / (B, E), or a mapping name -> weight
                (unknown names raise ``KeyError``).
        """
        if weights is None:
            return np.zeros(self.n_expressions)
        if isinstance(weights, Mapping):
            index = {name: i for i, name in enumerate(self.expression_names)}
            out = np.zeros(self.n_expressions)
            for name, value in weights.items():
                if name not in index:
                    raise KeyError(f"unknown expression {name!r}; known: {', '.join(self.expression_names)}")
                out[index[name]] = value
            return out
        out = np.asarray(weights, dtype=np.float64)
        if out.shape[-1] != self.n_expressions:
            raise ValueError(f"expected {self.n_expressions} expression weights, got shape {out.shape}")
        return out

    def vertices(self, identity_weights: Optional[np.ndarray] = None,
                 expression_weights: ExpressionWeights = None) -> np.ndarray:
        """Vertex positions of a head, nphm frame.

        Args:
            identity_weights: (k,) or (B, k) weights of the first k <= K identity modes
                (None: the mean identity).
            expression_weights: (E,) / (B, E) array or a mapping name -> weight (None: neutral).

        Returns:
            (V, 3) float64, or (B, V, 3) when any weights are batched.
        """
        out = self.neutral
        if identity_weights is not None:
            w = np.asarray(identity_weights, dtype=np.float64)
            k = w.shape[-1]
            if k > self.n_identity:
                raise ValueError(f"{k} identity weights for {self.n_identity} modes")
            out = out + np.tensordot(w, self.identity_modes[:k], axes=1)
        if expression_weights is not None:
            e = self.expression_vector(expression_weights)
            out = out + np.tensordot(e, self.expression_shapes, axes=1)
        return np.array(out, dtype=np.float64)

    def anchors(self, vertices: Optional[np.ndarray] = None) -> np.ndarray:
        """The 39 anchors (39, 3) (or (B, 39, 3)) of ``vertices`` (default: the neutral)."""
        v = self.neutral if vertices is None else np.asarray(vertices)
        return v[..., self.anchors39, :]

    def throat_plane(self, vertices: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """``(origin (3,), unit normal (3,))`` of the neck cut plane of ``vertices`` (V, 3)
        (default: the neutral); points with ``(x - origin) . normal > 0`` are kept."""
        v = self.neutral if vertices is None else np.asarray(vertices, dtype=np.float64)
        v1, v2, v3 = v[self.throat_plane_vertices]
        normal = np.cross(v2 - v1, v3 - v1)
        return v1.copy(), normal / np.linalg.norm(normal)

    def region_faces(self, name: str) -> np.ndarray:
        """(F_r, 3) faces whose three vertices all lie in region ``name``."""
        inside = np.zeros(self.n_vertices, dtype=bool)
        inside[self.regions[name]] = True
        return self.faces[inside[self.faces].all(axis=1)]


def read_ict_model(path: PathLike) -> IctHeadModel:
    """Read an asset written by :func:`nphm.data.heads.convert_ict.convert_ict_facekit`."""
    with np.load(path, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    if int(a["format_version"]) != FORMAT_VERSION:
        raise ValueError(f"{path}: asset format {int(a['format_version'])}, this loader reads {FORMAT_VERSION}")
    to_nphm = Similarity(scale=float(a["to_nphm_scale"]), rotation=_frozen(a["to_nphm_rotation"]),
                         translation=_frozen(a["to_nphm_translation"]))
    neutral_cm = a["neutral_cm"].astype(np.float64)
    # s * x @ R.T + t, bit for bit as the asset was made and checked (Similarity.apply inverts R,
    # which moves vertices by ~1e-16 and flips faces at the neck cut plane, whose vertices lie on it)
    neutral = to_nphm.apply_offsets(neutral_cm) + to_nphm.translation
    modes_cm = unpack_identity(neutral_cm, a)
    linear = (to_nphm.scale * to_nphm.rotation).T.astype(np.float32)
    labels = a["region_labels"]
    names = tuple(str(n) for n in a["region_names"])
    regions = {name: _frozen(np.flatnonzero(labels == i)) for i, name in enumerate(names) if (labels == i).any()}
    regions["skin"] = _frozen(np.flatnonzero(np.isin(labels, [names.index(str(n)) for n in a["skin_regions"]])))
    kit_index = a["kit_vertex_index"].astype(np.int64)
    first, last = (int(x) for x in a["narrow_face_kit_range"])
    regions["narrow_face"] = _frozen(np.flatnonzero((kit_index >= first) & (kit_index <= last)))
    regions["face_region"] = regions[str(a["face_region_name"])]
    return IctHeadModel(
        neutral=_frozen(neutral),
        faces=_frozen(a["faces"].astype(np.int64)),
        identity_modes=_frozen(modes_cm @ linear),
        expression_shapes=_frozen(a["expression_shapes_cm"].astype(np.float32) @ linear),
        expression_names=tuple(str(n) for n in a["expression_names"]),
        regions=MappingProxyType(regions),
        region_labels=_frozen(labels),
        region_names=names,
        landmarks68=_frozen(a["landmarks68"].astype(np.int64)),
        anchors39=_frozen(a["anchors39"].astype(np.int64)),
        anchor_meanings=tuple(str(m) for m in a["anchor_meanings"]),
        throat_plane_vertices=_frozen(a["throat_plane_vertices"].astype(np.int64)),
        to_nphm=to_nphm,
        kit_vertex_index=_frozen(kit_index),
    )


@lru_cache(maxsize=1)
def load_ict_model() -> IctHeadModel:
    """The shipped model (cached: one shared, read-only instance)."""
    return read_ict_model(ASSET_PATH)


def load_release_anchors() -> np.ndarray:
    """The release's mean anchors (39, 3) float64, nphm frame, release order."""
    return np.load(RELEASE_ANCHORS_PATH)
