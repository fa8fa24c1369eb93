"""How the 39 anchor vertices of the ICT template were proposed (the chosen ones are constants
in :mod:`nphm.data.heads.anchors`; this module documents and reproduces the derivation).

Procedure (``propose_anchor_vertices(neutral_cm, release_means, skin_vertices,
fixed_by_landmarks(landmarks68))`` reproduces :data:`~nphm.data.heads.anchors.ANCHOR_VERTICES`):
align the template to the release's mean anchors with the anchors whose vertex is
fixed by meaning (68-landmark eye corners, mouth corners, nose tip, lips, chin), then alternate
(a) nearest template vertex to each release anchor, with the two members of a mirrored pair
chosen together as a vertex and its mirror image and the midline anchors restricted to
vertices on the symmetry plane, and (b) a similarity fit of the chosen vertices to the
mirror-symmetrised release anchors, until the choice no longer changes.
"""
from __future__ import annotations

from typing import Dict, Mapping, Tuple

import numpy as np
from scipy.spatial import cKDTree

from nphm.data.frames import Similarity, umeyama
from nphm.data.heads.anchors import LANDMARK_OF_ANCHOR

#: anchor layout of the release: 16 mirrored pairs (2k, 2k+1), then 7 on the midline
N_PAIRS = 16
N_ANCHORS = 39
MIDLINE = tuple(range(2 * N_PAIRS, N_ANCHORS))


def mirror_map(vertices: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Index of each vertex's mirror image under x -> -x, and the mirror distance.

    Args:
        vertices: (V, 3) template vertices of a left/right symmetric mesh (symmetry plane x = 0).

    Returns:
        ``(mirror (V,) int64, distance (V,) float64)``: ``vertices[mirror[i]]`` is the vertex
        nearest to ``vertices[i] * (-1, 1, 1)``, at ``distance[i]`` from it (units of ``vertices``).
    """
    v = np.asarray(vertices, dtype=np.float64)
    dist, idx = cKDTree(v).query(v * np.array([-1.0, 1.0, 1.0]))
    return idx.astype(np.int64), dist


def mirror_anchors(anchors: np.ndarray) -> np.ndarray:
    """The anchor set mirrored under x -> -x with the members of each pair swapped, (39, 3)."""
    a = np.asarray(anchors, dtype=np.float64) * np.array([-1.0, 1.0, 1.0])
    order = np.arange(N_ANCHORS)
    order[: 2 * N_PAIRS] = order[: 2 * N_PAIRS].reshape(N_PAIRS, 2)[:, ::-1].ravel()
    return a[order]


def symmetrise_anchors(anchors: np.ndarray) -> np.ndarray:
    """Mean of ``anchors`` (39, 3) and their mirror image: exactly symmetric about x = 0."""
    return 0.5 * (np.asarray(anchors, dtype=np.float64) + mirror_anchors(anchors))


def choose_nearest(
    aligned: np.ndarray,
    targets: np.ndarray,
    candidates: np.ndarray,
    mirror: np.ndarray,
    midline_tolerance: float,
    fixed: Mapping[int, int],
) -> np.ndarray:
    """One nearest-vertex choice of all 39 anchors.

    Args:
        aligned: (V, 3) template vertices already mapped into the frame of ``targets``.
        targets: (39, 3) anchor positions in that frame.
        candidates: (C,) vertex indices anchors may use (e.g. the skin).
        mirror: (V,) mirror vertex of every candidate (:func:`mirror_map`).
        midline_tolerance: max |x| of midline candidates, in the frame of ``aligned``.
        fixed: anchor index -> vertex kept as is.

    Returns:
        (39,) int64 vertex indices; pairs are mirror images of each other.
    """
    chosen = np.zeros(N_ANCHORS, dtype=np.int64)
    cand = np.asarray(candidates, dtype=np.int64)
    for k in range(N_PAIRS):
        a, b = targets[2 * k], targets[2 * k + 1]
        cost = (((aligned[cand] - a) ** 2).sum(1) + ((aligned[mirror[cand]] - b) ** 2).sum(1))
        v = cand[np.argmin(cost)]
        chosen[2 * k], chosen[2 * k + 1] = v, mirror[v]
    mid = cand[np.abs(aligned[cand, 0]) <= midline_tolerance]
    for k in MIDLINE:
        chosen[k] = mid[np.argmin(((aligned[mid] - targets[k]) ** 2).sum(1))]
    for k, v in fixed.items():
        chosen[k] = v
    return chosen


def propose_anchor_vertices(
    template: np.ndarray,
    targets: np.ndarray,
    candidates: np.ndarray,
    fixed: Mapping[int, int],
    midline_tolerance: float = 1e-3,
    max_iterations: int = 20,
) -> Tuple[np.ndarray, Similarity]:
    """Alternate nearest-vertex choice and similarity fit (see the module docstring).

    Args:
        template: (V, 3) template vertices in their own frame (the kit: centimetres).
        targets: (39, 3) release mean anchors, nphm frame, release order.
        candidates: (C,) vertex indices anchors may use.
        fixed: anchor index -> vertex chosen by meaning (at least 3 non-collinear ones).
        midline_tolerance: max |x| of midline vertices in the template frame.
        max_iterations: bound on the alternation.

    Returns:
        ``(vertices (39,) int64, similarity template -> nphm)``.
    """
    template = np.asarray(template, dtype=np.float64)
    candidates = np.asarray(candidates, dtype=np.int64)
    sym_targets = symmetrise_anchors(targets)
    mirror = np.arange(len(template))
    mirror[candidates] = candidates[mirror_map(template[candidates])[0]]
    keys = sorted(fixed)
    similarity = umeyama(template[[fixed[k] for k in keys]], sym_targets[keys])
    chosen = np.full(N_ANCHORS, -1, dtype=np.int64)
    for _ in range(max_iterations):
        aligned = similarity.apply(template)
        tol = midline_tolerance * similarity.scale
        new = choose_nearest(aligned, sym_targets, candidates, mirror, tol, fixed)
        similarity = umeyama(template[new], sym_targets)
        if np.array_equal(new, chosen):
            break
        chosen = new
    return chosen, similarity


def fixed_by_landmarks(landmarks68: np.ndarray) -> Dict[int, int]:
    """Anchor index -> vertex for the anchors that are 68-landmarks
    (:data:`~nphm.data.heads.anchors.LANDMARK_OF_ANCHOR`), from the template's (68,) landmark
    vertex indices."""
    lm = np.asarray(landmarks68, dtype=np.int64)
    return {anchor: int(lm[landmark]) for anchor, landmark in LANDMARK_OF_ANCHOR.items()}


def anchor_residuals_mm(points_nphm: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-anchor distance (39,) in millimetres (1 nphm unit = 250 mm)."""
    return 250.0 * np.linalg.norm(np.asarray(points_nphm) - np.asarray(targets), axis=-1)

