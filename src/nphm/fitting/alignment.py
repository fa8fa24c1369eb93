"""Similarity alignment of a scan to the nphm frame: Umeyama, trimmed ICP, automatic start.

Transforms use the dataset's convention (:mod:`nphm.data.frames`): a similarity ``(s, R, t)``
maps input points to the nphm frame by ``x_nphm = s * x_in @ R^T + t`` (row vectors; ``R`` a
rotation), i.e. ``x_in = (1/s) * (x_nphm - t) @ R`` = :func:`nphm.data.frames.nphm_to_raw`.
:class:`~nphm.data.frames.Similarity` and :func:`~nphm.data.frames.umeyama` live there and are
re-exported here.

:func:`auto_align` (principal-axis starts, the unit's scale) suits complete or frontal head
scans near the mean head's size; :mod:`nphm.fitting.auto_pose` finds the pose from any
orientation, unit and size, ranks the candidates with the model and says how confident it is.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
from scipy.spatial import cKDTree

from nphm.data.frames import Similarity, umeyama  # noqa: F401  (umeyama re-exported)

#: Scale from one input unit to nphm units (nphm = FLAME metres * 4; one unit = 250 mm).
UNIT_TO_NPHM = {"nphm": 1.0, "m": 4.0, "cm": 0.04, "mm": 0.004}
#: Millimetres per nphm unit at the model's scale (FLAME metres * 4).
MM_PER_NPHM = 250.0


#: Without a declared unit, an estimated scale within this factor of a unit's is taken as that
#: unit at the head's real size (units lie 4-10x apart, heads within +-15 %).
UNIT_GUESS_FACTOR = 1.25


def closest_unit(scale: float) -> str:
    """The unit of :data:`UNIT_TO_NPHM` whose scale is closest to ``scale`` (by their ratio)."""
    return min(UNIT_TO_NPHM, key=lambda u: abs(np.log(scale / UNIT_TO_NPHM[u])))


def unit_of_scale(scale: float, factor: float = UNIT_GUESS_FACTOR) -> Optional[str]:
    """The unit of :data:`UNIT_TO_NPHM` whose scale lies within ``factor`` of ``scale``, or None."""
    unit = closest_unit(scale)
    return unit if abs(np.log(scale / UNIT_TO_NPHM[unit])) <= np.log(factor) else None


def at_unit_scale(T: Similarity, unit_scale: float, points: np.ndarray) -> Similarity:
    """``T`` with the scale ``unit_scale``, mapping the centroid of ``points`` (N, 3, input frame)
    to the same place."""
    c = np.asarray(points, dtype=np.float64).mean(0)
    return Similarity(unit_scale, T.rotation, T.apply(c[None])[0] - unit_scale * T.rotation @ c)


def mm_per_nphm(scale: float, unit: Optional[str] = None) -> float:
    """Millimetres per nphm unit of a scan aligned by a similarity of ``scale``.

    A distance ``d`` in the nphm frame is ``d / scale`` input units, i.e.
    ``d / scale * UNIT_TO_NPHM[unit] * MM_PER_NPHM`` mm when the input's ``unit`` is known; without
    a unit, the model's nominal :data:`MM_PER_NPHM`.
    """
    if unit is None:
        return MM_PER_NPHM
    return MM_PER_NPHM * UNIT_TO_NPHM[unit] / float(scale)


def check_points(points: np.ndarray, what: str, min_points: int = 3) -> np.ndarray:
    """Validate an (N, 3) point array: finite, enough points, not all on a line.

    Returns the points as float64. Raises ValueError naming ``what`` and the problem.
    """
    p = np.asarray(points)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"{what}: expected an (N, 3) array of points, got shape {p.shape}")
    if p.shape[0] == 0:
        raise ValueError(f"{what}: contains no points")
    p = p.astype(np.float64)
    bad = ~np.isfinite(p).all(axis=1)
    if bad.any():
        raise ValueError(f"{what}: {int(bad.sum())} of {len(p)} points have NaN or infinite coordinates")
    if p.shape[0] < min_points:
        raise ValueError(f"{what}: needs at least {min_points} points, got {p.shape[0]}")
    sv = np.linalg.svd(p - p.mean(0), compute_uv=False)
    if sv[0] <= 1e-12 * max(1.0, np.abs(p).max()):
        raise ValueError(f"{what}: all points coincide")
    if sv[1] <= 1e-9 * sv[0]:
        raise ValueError(f"{what}: points are collinear (degenerate)")
    return p


def rotation_angle_deg(R1: np.ndarray, R2: np.ndarray) -> float:
    """Angle (degrees) of the rotation ``R1 R2^T`` (atan2 form: accurate for tiny angles too)."""
    Rr = np.asarray(R1) @ np.asarray(R2).T
    sin = 0.5 * np.linalg.norm([Rr[2, 1] - Rr[1, 2], Rr[0, 2] - Rr[2, 0], Rr[1, 0] - Rr[0, 1]])
    cos = 0.5 * (np.trace(Rr) - 1.0)
    return float(np.degrees(np.arctan2(sin, cos)))


@dataclass
class IcpResult:
    transform: Similarity
    rms: float  # RMS distance (nphm units) of the kept (trimmed) point pairs
    score: float  # mean of min(distance, score_cap) over all points: used to compare starts
    iterations: int


def updated_similarity(T: Similarity, sigma: float, dR: np.ndarray, center: np.ndarray,
                       shift: np.ndarray) -> Similarity:
    """``T`` followed by ``p -> (1 + sigma) dR (p - center) + center + shift`` (nphm frame): the
    update of one ICP or pose-refinement step about the centre ``center`` (3,) of the points."""
    return Similarity(
        T.scale * (1.0 + sigma),
        dR @ T.rotation,
        (1.0 + sigma) * dR @ (T.translation - center) + center + shift,
    )


class Target:
    """A reference surface for ICP: points (M, 3) with unit normals (M, 3), nphm frame."""

    def __init__(self, points: np.ndarray, normals: np.ndarray) -> None:
        self.points = np.asarray(points, dtype=np.float64)
        n = np.asarray(normals, dtype=np.float64)
        self.normals = n / np.linalg.norm(n, axis=1, keepdims=True).clip(1e-12)
        if self.points.shape != self.normals.shape or self.points.ndim != 2 or self.points.shape[1] != 3:
            raise ValueError(f"target points and normals must be (M, 3), got {points.shape} and {normals.shape}")
        self.tree = cKDTree(self.points)


def icp(
    src: np.ndarray,
    target: Target,
    init: Similarity,
    iterations: int = 30,
    trim: float = 0.9,
    with_scale: bool = False,
    tol: float = 1e-8,
    score_cap: float = 0.05,
    scale_range: float = 1.3,
) -> IcpResult:
    """Trimmed point-to-plane ICP of ``src`` (N, 3, input frame) onto ``target``.

    Each iteration matches every transformed source point to its nearest target point, keeps the
    ``trim`` fraction with the smallest distances (robust to parts of the scan the target lacks,
    e.g. shoulders) and takes a Gauss-Newton step of the point-to-plane error for a small
    rotation and translation (and scale when ``with_scale``, kept within a factor
    ``scale_range`` of the scale of ``init``: a partial scan could otherwise shrink onto a patch
    of the target; without ``with_scale`` the scale of ``init`` is kept). It stops after the
    first step shorter than ``tol``. :func:`icp_batch` with one start.
    """
    return icp_batch(src, target, [init], iterations, trim, with_scale, tol, score_cap, scale_range)[0]


def _rotations_from_vectors(w: np.ndarray) -> np.ndarray:
    """Rodrigues for a batch: (K, 3) rotation vectors -> (K, 3, 3) rotations."""
    angle = np.linalg.norm(w, axis=1)
    k = w / np.where(angle > 1e-15, angle, 1.0)[:, None]
    K = np.zeros((len(w), 3, 3))
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    K = K - K.transpose(0, 2, 1)
    R = np.eye(3) + np.sin(angle)[:, None, None] * K + (1 - np.cos(angle))[:, None, None] * K @ K
    R[angle < 1e-15] = np.eye(3)
    return R


def icp_batch(
    src: np.ndarray,
    target: Target,
    inits: Sequence[Similarity],
    iterations: int = 30,
    trim: float = 0.9,
    with_scale: bool = False,
    tol: float = 1e-8,
    score_cap: float = 0.05,
    scale_range: float = 1.3,
) -> List[IcpResult]:
    """:func:`icp` of the same ``src`` (N, 3, input frame) from every start in ``inits`` (K of
    them) at once: one nearest-neighbour query and one batched solve per iteration for all
    starts (the automatic pose runs 84). Every start follows exactly its own :func:`icp` (a
    start stops when its own step is shorter than ``tol``); only the summation order differs.
    """
    src = np.asarray(src, dtype=np.float64)
    K, N = len(inits), len(src)
    scale = np.array([T.scale for T in inits], dtype=np.float64)
    rot = np.stack([np.asarray(T.rotation, dtype=np.float64) for T in inits])
    trans = np.stack([np.asarray(T.translation, dtype=np.float64) for T in inits])
    s_lo, s_hi = scale / scale_range, scale * scale_range
    active = np.ones(K, dtype=bool)
    rms = np.full(K, np.inf)
    its = np.zeros(K, dtype=int)

    def apply(idx: np.ndarray) -> np.ndarray:
        # Similarity.apply: s * x @ R^-1 + t, R^-1 taken explicitly as there
        return scale[idx, None, None] * src[None] @ np.linalg.inv(rot[idx]) + trans[idx, None, :]

    n_unknowns = 7 if with_scale else 6
    for it in range(1, iterations + 1):
        idx = np.nonzero(active)[0]
        if idx.size == 0:
            break
        its[idx] = it
        p = apply(idx)  # (k, N, 3)
        _, j = target.tree.query(p.reshape(-1, 3), workers=-1)
        j = j.reshape(len(idx), N)
        q, n = target.points[j], target.normals[j]
        r = ((p - q) * n).sum(-1)  # (k, N)
        cut = np.quantile(np.abs(r), trim, axis=1) if trim < 1.0 else np.full(len(idx), np.inf)
        w = (np.abs(r) <= cut[:, None]).astype(np.float64)
        count = w.sum(1)
        rms[idx] = np.sqrt((w * r**2).sum(1) / count)
        c = (w[..., None] * p).sum(1) / count[:, None]
        pc = p - c[:, None, :]
        cols = [np.cross(pc, n), n]
        if with_scale:
            cols.append((pc * n).sum(-1, keepdims=True))
        A = np.concatenate(cols, axis=-1)  # (k, N, 6 or 7)
        Aw = A * w[..., None]
        # normal equations of the small least-squares problems, lightly damped
        AtA = Aw.transpose(0, 2, 1) @ A
        trace = np.trace(AtA, axis1=1, axis2=2)
        AtA[:, np.arange(n_unknowns), np.arange(n_unknowns)] += (1e-12 * np.maximum(trace, 1e-30))[:, None]
        x = np.linalg.solve(AtA, -(Aw.transpose(0, 2, 1) @ r[..., None]))[..., 0]
        dR = _rotations_from_vectors(x[:, :3])
        if with_scale:
            sigma = np.clip(scale[idx] * (1.0 + x[:, 6]), s_lo[idx], s_hi[idx]) / scale[idx] - 1.0
        else:
            sigma = np.zeros(len(idx))
        # updated_similarity for every start
        f = (1.0 + sigma)[:, None]
        trans[idx] = f * (dR @ (trans[idx] - c)[..., None])[..., 0] + c + x[:, 3:6]
        rot[idx] = dR @ rot[idx]
        scale[idx] = scale[idx] * (1.0 + sigma)
        active[idx[np.linalg.norm(x[:, :6], axis=1) < tol]] = False
    all_idx = np.arange(K)
    d, _ = target.tree.query(apply(all_idx).reshape(-1, 3), workers=-1)
    score = np.minimum(d.reshape(K, N), score_cap).mean(1)
    return [IcpResult(Similarity(float(scale[k]), rot[k], trans[k]), float(rms[k]), float(score[k]), int(its[k]))
            for k in range(K)]


def _principal_axes(points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Centroid (3,) and principal axes (3, 3) as columns, by decreasing variance."""
    c = points.mean(0)
    _, _, Vt = np.linalg.svd(points - c, full_matrices=False)
    return c, Vt.T


def candidate_rotations(src: np.ndarray, ref: np.ndarray) -> List[np.ndarray]:
    """The 24 rotations that map the principal axes of ``src`` onto those of ``ref`` up to
    permutation and sign (PCA cannot tell the axes' order for similar spreads nor their signs)."""
    _, Vs = _principal_axes(src)
    _, Vr = _principal_axes(ref)
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            P = np.zeros((3, 3))
            P[list(range(3)), list(perm)] = signs
            R = Vr @ P @ Vs.T
            if np.linalg.det(R) > 0:
                out.append(R)
    return out


def guess_unit(points: np.ndarray, reference: np.ndarray) -> str:
    """The unit of :data:`UNIT_TO_NPHM` under which ``points`` have the size closest to
    ``reference`` (nphm frame), by the RMS distance to the centroid."""
    size = np.sqrt(((points - points.mean(0)) ** 2).sum(1).mean())
    ref = np.sqrt(((reference - reference.mean(0)) ** 2).sum(1).mean())
    return min(UNIT_TO_NPHM, key=lambda u: abs(np.log(size * UNIT_TO_NPHM[u] / ref)))


def auto_align(
    points: np.ndarray,
    target: Target,
    scale: Optional[float] = None,
    keep_scale: bool = False,
    n_points: int = 1500,
    n_refine: int = 3,
    trim: float = 0.9,
    seed: int = 0,
) -> IcpResult:
    """Similarity from a scan (input frame) to a reference head (nphm frame) without landmarks.

    Starts: centroids matched, scale ``scale`` (input unit -> nphm; the unit guessed from the
    sizes when None), rotation one of the 24 principal-axis candidates. A short ICP from every
    start on a subsample; the best starts by :attr:`IcpResult.score` (mean distance of all
    points, capped; trimming would hide features such as the nose that tell front from back) are
    refined on more points; the best score wins.

    The ICP may change the scale by up to 30 % so that a head larger or smaller than the mean
    head still finds its pose; unless ``keep_scale``, the result then gets back the unit's exact
    scale (the identity latent, not the alignment, should explain the head's size), with the
    translation that keeps the scan's centroid where the ICP put it.

    Args:
        points: (N, 3) scan in the input frame; target: the mean head's surface (nphm frame).
    """
    rng = np.random.default_rng(seed)

    def subsample(n: int) -> np.ndarray:
        return points if len(points) <= n else points[rng.choice(len(points), n, replace=False)]

    src = subsample(n_points)
    if scale is None:
        scale = UNIT_TO_NPHM[guess_unit(points, target.points)]
    c_src = src.mean(0)
    c_ref = target.points.mean(0)
    inits = [Similarity(scale, R, c_ref - scale * R @ c_src) for R in candidate_rotations(src * scale, target.points)]
    starts = sorted(icp_batch(src, target, inits, iterations=10, trim=trim, with_scale=True), key=lambda r: r.score)
    dense = subsample(4 * n_points)
    refined = icp_batch(dense, target, [r.transform for r in starts[:n_refine]], iterations=40, trim=trim,
                        with_scale=True)
    best = min(refined, key=lambda r: r.score)
    if keep_scale:
        return best
    T = best.transform
    c = points.mean(0)
    fixed = Similarity(scale, T.rotation, T.apply(c[None])[0] - scale * T.rotation @ c)
    d, _ = target.tree.query(fixed.apply(dense))
    return IcpResult(fixed, best.rms, float(np.minimum(d, 0.05).mean()), best.iterations)
