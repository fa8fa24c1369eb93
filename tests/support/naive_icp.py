"""The straightforward ICP: one start at a time, point subsets taken by boolean indexing (the
reference of :func:`nphm.fitting.alignment.icp_batch`)."""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from nphm.fitting.alignment import IcpResult, Similarity, Target, updated_similarity


def naive_icp(src: np.ndarray, target: Target, init: Similarity, iterations: int = 30, trim: float = 0.9,
              with_scale: bool = False, tol: float = 1e-8, score_cap: float = 0.05,
              scale_range: float = 1.3) -> IcpResult:
    s_lo, s_hi = init.scale / scale_range, init.scale * scale_range
    T, rms, it = init, np.inf, 0
    for it in range(1, iterations + 1):
        p = T.apply(src)
        _, j = target.tree.query(p)
        q, n = target.points[j], target.normals[j]
        r = ((p - q) * n).sum(1)
        keep = np.abs(r) <= (np.quantile(np.abs(r), trim) if trim < 1.0 else np.inf)
        rms = float(np.sqrt(np.mean(r[keep] ** 2)))
        c = p[keep].mean(0)
        pc = p[keep] - c
        cols = [np.cross(pc, n[keep]), n[keep]]
        if with_scale:
            cols.append((pc * n[keep]).sum(1, keepdims=True))
        A = np.concatenate(cols, axis=1)
        AtA = A.T @ A
        AtA[np.diag_indices_from(AtA)] += 1e-12 * max(float(np.trace(AtA)), 1e-30)
        x = np.linalg.solve(AtA, -(A.T @ r[keep]))
        dR = Rotation.from_rotvec(x[:3]).as_matrix()
        sigma = float(np.clip(T.scale * (1.0 + x[6]), s_lo, s_hi) / T.scale - 1.0) if with_scale else 0.0
        T = updated_similarity(T, sigma, dR, c, x[3:6])
        if np.linalg.norm(x[:6]) < tol:
            break
    d, _ = target.tree.query(T.apply(src))
    return IcpResult(T, rms, float(np.minimum(d, score_cap).mean()), it)
