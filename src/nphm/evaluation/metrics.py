"""Point-cloud reconstruction metrics (accuracy, completeness, Chamfer, normals, F-score).

Definitions (distances ``d`` are nearest-neighbour distances multiplied by ``scale``):

- accuracy = mean over predicted points of ``d(pred -> GT)``; completeness = mean over GT
  points of ``d(GT -> pred)``; ``accuracy2`` / ``completeness2`` are the means of squares;
- Chamfer-L1 = (accuracy + completeness) / 2, Chamfer-L2 = (accuracy2 + completeness2) / 2;
- normal accuracy / completeness = mean ``|n . n_nn|`` of unit normals over the same
  nearest neighbours (orientation-free); normal consistency = their mean;
- at threshold ``tau``: precision = fraction of predicted points with ``d <= tau``, recall =
  fraction of GT points with ``d <= tau``, F = 2 P R / (P + R) (0 when both are 0).

The returned dictionary starts with the release's ``metrics.json`` keys in its order
(:data:`RELEASE_METRIC_KEYS`); precision and recall follow under ``precision_XX`` /
``recall_XX`` with the same suffixes as the F-scores.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
from scipy.spatial import cKDTree

__all__ = [
    "THRESHOLDS_MM",
    "THRESHOLD_SUFFIXES",
    "RELEASE_METRIC_KEYS",
    "METRIC_KEYS",
    "nearest_neighbors",
    "eval_pointcloud",
]

#: F-score thresholds of the release, in the metric units (mm when scale = 1/s).
THRESHOLDS_MM: Tuple[float, ...] = (1.0, 5.0, 10.0, 20.0)
#: Key suffixes the release uses for those thresholds (``f_score_05`` is 1 mm, ...).
THRESHOLD_SUFFIXES: Tuple[str, ...] = ("05", "10", "15", "20")

RELEASE_METRIC_KEYS: Tuple[str, ...] = (
    "completeness",
    "accuracy",
    "normals completeness",
    "normals accuracy",
    "normals consistency",
    "completeness2",
    "accuracy2",
    "chamfer_l2",
    "chamfer_l1",
    "f_score_05",
    "f_score_10",
    "f_score_15",
    "f_score_20",
)
METRIC_KEYS: Tuple[str, ...] = RELEASE_METRIC_KEYS + tuple(
    f"{kind}_{s}" for kind in ("precision", "recall") for s in THRESHOLD_SUFFIXES
)


def _as_points(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"{name} must be (N, 3), got {x.shape}")
    if len(x) == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains non-finite values")
    return x


def nearest_neighbors(query: np.ndarray, reference: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Euclidean nearest neighbour in ``reference`` of every ``query`` point (KD-tree, all cores).

    Returns:
        distances (n_query,) and indices (n_query,) into ``reference``.
    """
    # Sliding-midpoint trees build twice as fast as median-balanced ones and query as fast.
    dist, idx = cKDTree(reference, balanced_tree=False).query(query, k=1, workers=-1)
    return dist, idx


def vertex_set_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric mean nearest-neighbour distance ``(mean d(a->b) + mean d(b->a)) / 2`` between two
    point sets (N, 3) and (M, 3), e.g. two meshes' vertices: a check that two meshes coincide,
    not the evaluation's Chamfer-L1 (which compares render-based surface samples, in mm)."""
    return float(0.5 * (nearest_neighbors(a, b)[0].mean() + nearest_neighbors(b, a)[0].mean()))


def _unit(n: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    return n / np.where(norm > 0, norm, 1.0)


def eval_pointcloud(
    pred_points: np.ndarray,
    gt_points: np.ndarray,
    pred_normals: Optional[np.ndarray] = None,
    gt_normals: Optional[np.ndarray] = None,
    scale: float = 1.0,
    thresholds: Sequence[float] = THRESHOLDS_MM,
    return_errors: bool = False,
) -> Union[Dict[str, float], Tuple[Dict[str, float], Dict[str, np.ndarray]]]:
    """Compare a predicted and a ground-truth point cloud.

    Args:
        pred_points: (N, 3) predicted surface samples (any frame shared with ``gt_points``).
        gt_points: (M, 3) ground-truth surface samples.
        pred_normals, gt_normals: optional (N, 3) / (M, 3) normals (need not be unit);
            without both, the normal metrics are NaN.
        scale: every distance is multiplied by it (``1 / s`` turns nphm units into mm).
        thresholds: four F-score thresholds in the scaled units (release: 1, 5, 10, 20 mm).
        return_errors: also return the per-point arrays.
    Returns:
        metrics: :data:`METRIC_KEYS` -> float. With ``return_errors``, also
        ``{"accuracy": (N,), "completeness": (M,), "accuracy_normals": (N,) or None,
        "completeness_normals": (M,) or None, "accuracy_index": (N,), "completeness_index": (M,)}``
        (scaled distances; indices of the nearest neighbours).
    """
    pred = _as_points(pred_points, "pred_points")
    gt = _as_points(gt_points, "gt_points")
    thresholds = tuple(float(t) for t in thresholds)
    if len(thresholds) != len(THRESHOLD_SUFFIXES):
        raise ValueError(f"expected {len(THRESHOLD_SUFFIXES)} thresholds, got {len(thresholds)}")

    acc, acc_idx = nearest_neighbors(pred, gt)
    comp, comp_idx = nearest_neighbors(gt, pred)
    acc = acc * scale
    comp = comp * scale

    use_normals = pred_normals is not None and gt_normals is not None
    acc_n = comp_n = None
    if use_normals:
        pn = _unit(np.asarray(pred_normals, dtype=np.float64))
        gn = _unit(np.asarray(gt_normals, dtype=np.float64))
        if pn.shape != pred.shape or gn.shape != gt.shape:
            raise ValueError(f"normals must match their points: {pn.shape} vs {pred.shape}, {gn.shape} vs {gt.shape}")
        acc_n = np.abs(np.einsum("nd,nd->n", pn, gn[acc_idx]))
        comp_n = np.abs(np.einsum("nd,nd->n", gn, pn[comp_idx]))

    out: Dict[str, float] = {}
    out["completeness"] = float(comp.mean())
    out["accuracy"] = float(acc.mean())
    out["normals completeness"] = float(comp_n.mean()) if use_normals else float("nan")
    out["normals accuracy"] = float(acc_n.mean()) if use_normals else float("nan")
    out["normals consistency"] = (
        0.5 * (out["normals completeness"] + out["normals accuracy"]) if use_normals else float("nan")
    )
    out["completeness2"] = float(np.mean(comp**2))
    out["accuracy2"] = float(np.mean(acc**2))
    out["chamfer_l2"] = 0.5 * (out["completeness2"] + out["accuracy2"])
    out["chamfer_l1"] = 0.5 * (out["completeness"] + out["accuracy"])
    precision = [float(np.mean(acc <= t)) for t in thresholds]
    recall = [float(np.mean(comp <= t)) for t in thresholds]
    for s, p, r in zip(THRESHOLD_SUFFIXES, precision, recall):
        out[f"f_score_{s}"] = 2 * p * r / (p + r) if p + r > 0 else 0.0
    for s, p in zip(THRESHOLD_SUFFIXES, precision):
        out[f"precision_{s}"] = p
    for s, r in zip(THRESHOLD_SUFFIXES, recall):
        out[f"recall_{s}"] = r

    if not return_errors:
        return out
    errors = {
        "accuracy": acc,
        "completeness": comp,
        "accuracy_normals": acc_n,
        "completeness_normals": comp_n,
        "accuracy_index": acc_idx,
        "completeness_index": comp_idx,
    }
    return out, errors
