"""One ICT subject in memory: identity, hair, expressions and the meshes of every scan.

Randomness is keyed by ``(seed, subject, stream, expression)`` (the procedural generator's
:func:`~nphm.data.synthetic.subject.rng_for`), so any scan can be produced alone, in any
order and in any process, with the same result. All meshes are in the nphm frame.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional, Tuple

import numpy as np
import trimesh

from nphm.data.heads import IctHeadModel, load_ict_model
from nphm.data.synthetic.ict.expression import IctExpression, sample_expression
from nphm.data.synthetic.ict.hair import (ScalpCoordinates, hair_offsets, hair_thickness, scalp_coordinates,
                                          smoothed_normals)
from nphm.data.synthetic.ict.identity import IctIdentity, sample_identity
from nphm.data.synthetic.ict.scan import ScannerRig, scan_mesh
from nphm.data.synthetic.ict.topology import NORMAL_SMOOTHING_STEPS, IctTopology, get_topology
from nphm.data.synthetic.scan import random_similarity
from nphm.data.synthetic.subject import ScanItem, rng_for

_STREAM_IDENTITY, _STREAM_EXPRESSION, _STREAM_SCAN, _STREAM_SIMILARITY, _STREAM_HAIR = 0, 1, 2, 3, 4


@lru_cache(maxsize=2)
def identity_basis(model: IctHeadModel) -> np.ndarray:
    """The model's identity modes as one float64 (K, V * 3) matrix (built once per process:
    ``weights @ basis`` is then a single fast product)."""
    return np.ascontiguousarray(model.identity_modes.reshape(model.n_identity, -1), dtype=np.float64)


@lru_cache(maxsize=2)
def template_scalp(model: IctHeadModel, topology: IctTopology) -> ScalpCoordinates:
    """The style-independent scalp coordinates of the template skin (built once per process)."""
    return scalp_coordinates(model.neutral[topology.skin], topology.skin_faces)


class IctSubject:
    """Subject ``subject`` of the ICT population with random ``seed``.

    The neutral head and its hair are computed once; each expression adds its ARKit shapes
    (the posed vertices of the last expression are cached, as :meth:`item` needs them three times).
    """

    def __init__(self, subject: int, seed: int, model: Optional[IctHeadModel] = None,
                 topology: Optional[IctTopology] = None, rig: ScannerRig = ScannerRig()) -> None:
        self.subject = int(subject)
        self.seed = int(seed)
        self.model = model if model is not None else load_ict_model()
        self.topology = topology if topology is not None else get_topology()
        self.rig = rig
        self.identity: IctIdentity = sample_identity(rng_for(self.seed, self.subject, _STREAM_IDENTITY),
                                                     rng_for(self.seed, self.subject, _STREAM_HAIR),
                                                     self.model.n_identity)
        self._neutral: Optional[np.ndarray] = None
        self._hair: Optional[np.ndarray] = None
        self._posed: Tuple[int, Optional[np.ndarray]] = (-1, None)

    def neutral_vertices(self) -> np.ndarray:
        """(V, 3) the identity's neutral model vertices, without hair (``model.vertices(weights)``)."""
        if self._neutral is None:
            offsets = (self.identity.weights @ identity_basis(self.model)).reshape(-1, 3)
            self._neutral = self.model.neutral + offsets
        return self._neutral

    def hair_thickness(self) -> np.ndarray:
        """(V_skin,) hair thickness of the skin vertices (nphm units)."""
        return hair_thickness(self.identity.hair, template_scalp(self.model, self.topology))

    def hair_offsets(self) -> np.ndarray:
        """(V_skin, 3) hair offsets of the skin vertices (the same for every expression)."""
        if self._hair is None:
            t = self.topology
            normals = smoothed_normals(self.neutral_vertices()[t.skin], t.skin_faces, t.skin_smoothing,
                                       NORMAL_SMOOTHING_STEPS)
            self._hair = hair_offsets(self.hair_thickness(), normals)
        return self._hair

    def expression(self, expression: int) -> IctExpression:
        """Type and ARKit weights of ``expression``."""
        return sample_expression(rng_for(self.seed, self.subject, _STREAM_EXPRESSION, expression), expression)

    def union_vertices(self, expression: int) -> np.ndarray:
        """(V, 3) all model vertices posed with ``expression``, the hair added to the skin."""
        if self._posed[0] != expression:
            names = self.model.expression_names
            weights = self.expression(expression).weights
            active = [names.index(n) for n in weights]
            v = self.neutral_vertices().copy()
            if active:
                w = np.array([weights[names[i]] for i in active])
                v += np.tensordot(w, self.model.expression_shapes[active], axes=1)
            v[self.topology.skin] += self.hair_offsets()
            self._posed = (expression, v)
        return self._posed[1]

    def registration(self, expression: int) -> trimesh.Trimesh:
        """Registration mesh (fixed topology, skin with hair + mouth socket + eyeballs)."""
        t = self.topology
        return trimesh.Trimesh(t.registration(self.union_vertices(expression)), t.registration_faces, process=False)

    def flame(self, expression: int) -> trimesh.Trimesh:
        """FLAME-like coarse mesh of ``expression``."""
        t = self.topology
        return trimesh.Trimesh(t.flame(t.registration(self.union_vertices(expression))), t.flame_faces,
                               process=False)

    def scan(self, expression: int) -> trimesh.Trimesh:
        """The scan: visible outer surface, subdivided, cut at the neck, noisy."""
        v = self.union_vertices(expression)
        rng = rng_for(self.seed, self.subject, _STREAM_SCAN, expression)
        t = self.topology
        return scan_mesh(v, t.union_faces, t.union_inner, t.openings, t.union_subdivision, self.model.throat_plane(v),
                         rng, self.rig)

    def similarity(self, expression: int) -> Tuple[float, np.ndarray, np.ndarray]:
        """(s, R, t) of the scan of ``expression`` (raw frame in millimetres)."""
        return random_similarity(rng_for(self.seed, self.subject, _STREAM_SIMILARITY, expression))

    def item(self, expression: int) -> ScanItem:
        """All meshes and the similarity of one scan, in memory (``expression_params`` holds the
        :class:`~nphm.data.synthetic.ict.expression.IctExpression`)."""
        s, rot, t = self.similarity(expression)
        params = self.expression(expression)
        return ScanItem(subject=self.subject, expression=expression, expression_type=params.kind,
                        expression_params=params, registration=self.registration(expression),
                        flame=self.flame(expression), scan=self.scan(expression), s=s, R=rot, t=t)
