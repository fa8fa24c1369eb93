"""One synthetic subject in memory: identity, expressions and the meshes of every scan.

Randomness is keyed by ``(seed, subject, stream[, expression])`` so that any scan can be
produced alone, in any order and in any process, with the same result.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np
import trimesh

from nphm.data.synthetic.expression import ExpressionParams, apply_expression, expression_type, sample_expression
from nphm.data.synthetic.scan import cut_and_noise, random_similarity
from nphm.data.synthetic.shape import IdentityParams, sample_identity
from nphm.data.synthetic.template import Template, get_template, ray_hits, surface_points
from nphm.utils.seeding import item_generator

_STREAM_IDENTITY, _STREAM_EXPRESSION, _STREAM_SCAN, _STREAM_SIMILARITY = 0, 1, 2, 3


def rng_for(seed: int, subject: int, stream: int, expression: int = 0) -> np.random.Generator:
    """Independent random generator for one (seed, subject, stream, expression)."""
    if min(seed, subject, expression) < 0:
        raise ValueError(f"seed, subject and expression must be >= 0, got {seed}, {subject}, {expression}")
    return item_generator(seed, subject, stream, expression)


@dataclass
class ScanItem:
    """Everything stored for one (subject, expression); meshes in the nphm frame.

    ``s``, ``R``, ``t``: x_raw = (1/s) * (x_nphm - t) @ R, raw units in millimetres.
    """

    subject: int
    expression: int
    expression_type: str
    expression_params: ExpressionParams
    registration: trimesh.Trimesh
    flame: trimesh.Trimesh
    scan: trimesh.Trimesh
    s: float
    R: np.ndarray
    t: np.ndarray


class SyntheticSubject:
    """Subject ``subject`` of the synthetic population with random ``seed``.

    Neutral sampled surfaces are computed lazily and cached; posing is cheap.
    """

    def __init__(self, subject: int, seed: int, template: Template | None = None) -> None:
        self.subject = int(subject)
        self.seed = int(seed)
        self.template = template if template is not None else get_template()
        self.identity: IdentityParams = sample_identity(rng_for(self.seed, self.subject, _STREAM_IDENTITY))
        self._neutral: Dict[str, np.ndarray] = {}

    def neutral_vertices(self, grid: str) -> np.ndarray:
        """(V, 3) neutral (closed-mouth) vertices on ``grid`` ("registration", "flame", "scan")."""
        if grid not in self._neutral:
            g = self.template.grids[grid]
            # start marching just outside the template head: identity changes move the surface
            # (before the proportion warp) by less than 0.1; rays starting inside restart further out
            hits = ray_hits(g, self.identity, start=self.template.hits[grid] + 0.15)
            self._neutral[grid] = surface_points(g, self.identity, hits)
        return self._neutral[grid]

    def expression_params(self, expression: int) -> ExpressionParams:
        return sample_expression(rng_for(self.seed, self.subject, _STREAM_EXPRESSION, expression), expression)

    def vertices(self, grid: str, expression: int) -> np.ndarray:
        """(V, 3) posed vertices of ``grid`` for ``expression``."""
        return apply_expression(self.neutral_vertices(grid), self.template.basis[grid],
                                self.expression_params(expression), self.identity)

    def registration(self, expression: int) -> trimesh.Trimesh:
        """Registration mesh (template topology) of ``expression``."""
        return trimesh.Trimesh(self.vertices("registration", expression),
                               self.template.grids["registration"].faces, process=False)

    def flame(self, expression: int) -> trimesh.Trimesh:
        """FLAME-like coarse mesh of ``expression``."""
        return trimesh.Trimesh(self.vertices("flame", expression), self.template.grids["flame"].faces,
                               process=False)

    def scan(self, expression: int) -> trimesh.Trimesh:
        """Raw scan (finer, different triangulation, noisy, open at the neck) of ``expression``."""
        rng = rng_for(self.seed, self.subject, _STREAM_SCAN, expression)
        return cut_and_noise(self.vertices("scan", expression), self.template.grids["scan"], rng)

    def similarity(self, expression: int) -> Tuple[float, np.ndarray, np.ndarray]:
        """(s, R, t) of the scan of ``expression``."""
        return random_similarity(rng_for(self.seed, self.subject, _STREAM_SIMILARITY, expression))

    def item(self, expression: int) -> ScanItem:
        """All meshes and the similarity of one scan, in memory."""
        s, rot, t = self.similarity(expression)
        return ScanItem(
            subject=self.subject, expression=expression, expression_type=expression_type(expression),
            expression_params=self.expression_params(expression), registration=self.registration(expression),
            flame=self.flame(expression), scan=self.scan(expression), s=s, R=rot, t=t)
