"""Linear (PCA) morphable head model fitted to point clouds: the quality benchmark's baseline.

The model lives in the registration topology, nphm frame. For identity coefficients
``alpha (n_id,)`` and the expression coefficients ``beta (n_ex,)`` of one scan::

    V(alpha, beta) = mean + sum_m alpha_m U_m + sum_m beta_m E_m                 (V, 3)

- ``U``: principal directions of the neutral-open registrations of the training subjects
  (centred PCA, ``mean`` is their mean);
- ``E``: principal directions of the expression offsets (registration of an expression minus the
  same subject's neutral-open registration) taken about zero, so that ``beta = 0`` is the
  neutral face.

Fitting (:func:`fit_linear_model`): the observed point clouds of one subject (one per
expression) share ``alpha``; every cloud has its own ``beta``. Starting from the mean, each
iteration finds for every observed point its closest point on the current mesh (face and
barycentric coordinates), drops correspondences beyond ``max_distance`` and the farthest
``1 - keep_fraction``, and solves the regularised linear least-squares problem
(:func:`solve_coefficients`)::

    min  sum_k sum_i |p_ki - sum_j b_kij V_k[f_kij]|^2 / noise_std^2
         + prior_weight * (sum_m alpha_m^2 / sigma_id_m^2 + sum_k sum_m beta_km^2 / sigma_ex_m^2)

which is linear because the closest point is a fixed barycentric combination of vertices that
are themselves linear in the coefficients (sigma: the PCA standard deviations).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.linalg

from nphm.utils.io import PathLike, atomic_path


#: (points (N, 3), face ids (N,), barycentric coordinates (N, 3)) of one observed cloud.
Correspondences = Tuple[np.ndarray, np.ndarray, np.ndarray]


# ----------------------------------------------------------------------------------- the model
def pca_basis(samples: np.ndarray, n_components: Optional[int] = None, center: bool = True,
              rel_tol: float = 1e-8) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal directions of ``samples (M, D)``.

    Args:
        n_components: keep at most this many (default: all with a non-zero standard deviation).
        center: subtract the mean first (otherwise the directions are taken about zero).
        rel_tol: directions whose standard deviation is below ``rel_tol`` times the largest are
            dropped (the null space, e.g. the last direction of a centred PCA).
    Returns:
        ``(mean (D,), basis (n, D) orthonormal rows, std (n,) decreasing)``; the sign of each
        direction makes its largest-magnitude entry positive.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 2:
        raise ValueError(f"samples must be (M, D), got shape {samples.shape}")
    if not np.all(np.isfinite(samples)):
        raise ValueError("samples contain NaN or infinite values")
    m, d = samples.shape
    mean = samples.mean(axis=0) if center and m else np.zeros(d)
    if m == 0:
        return mean, np.zeros((0, d)), np.zeros(0)
    _, s, vt = np.linalg.svd(samples - mean, full_matrices=False)
    std = s / np.sqrt(max(m - 1, 1) if center else m)
    keep = std > rel_tol * max(float(std[0]), np.finfo(float).tiny) if len(std) else np.zeros(0, bool)
    n = int(keep.sum()) if n_components is None else min(int(n_components), int(keep.sum()))
    basis, std = vt[:n], std[:n]
    signs = np.sign(basis[np.arange(n), np.abs(basis).argmax(axis=1)])
    return mean, basis * signs[:, None], std


@dataclass
class LinearHeadModel:
    """Linear head model in the registration topology (nphm frame).

    Attributes:
        mean: (V, 3) mean neutral-open registration.
        id_basis: (n_id, V, 3) identity directions (orthonormal when flattened); id_std: (n_id,).
        ex_basis: (n_ex, V, 3) expression-offset directions; ex_std: (n_ex,).
        faces: (F, 3) triangles of the registration topology.
        info: free-form description (training subjects, counts).
    """

    mean: np.ndarray
    id_basis: np.ndarray
    id_std: np.ndarray
    ex_basis: np.ndarray
    ex_std: np.ndarray
    faces: np.ndarray
    info: Dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = self.mean.shape[0]
        if self.mean.shape != (v, 3):
            raise ValueError(f"mean must be (V, 3), got {self.mean.shape}")
        for name, basis, std in (("id", self.id_basis, self.id_std), ("ex", self.ex_basis, self.ex_std)):
            if basis.ndim != 3 or basis.shape[1:] != (v, 3) or std.shape != (basis.shape[0],):
                raise ValueError(f"{name}_basis {basis.shape} / {name}_std {std.shape} do not fit {v} vertices")
            if np.any(std <= 0):
                raise ValueError(f"{name}_std must be positive")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3 or (len(self.faces) and self.faces.max() >= v):
            raise ValueError(f"faces must be (F, 3) indices below {v}, got shape {self.faces.shape}")

    @property
    def n_vertices(self) -> int:
        return int(self.mean.shape[0])

    @property
    def n_id(self) -> int:
        return int(self.id_basis.shape[0])

    @property
    def n_ex(self) -> int:
        return int(self.ex_basis.shape[0])

    def vertices(self, alpha: np.ndarray, beta: Optional[np.ndarray] = None) -> np.ndarray:
        """(V, 3) vertices for ``alpha (n_id,)`` and ``beta (n_ex,)`` (None: neutral)."""
        v = self.mean + np.tensordot(np.asarray(alpha, dtype=np.float64), self.id_basis, axes=1)
        if beta is not None and self.n_ex:
            v = v + np.tensordot(np.asarray(beta, dtype=np.float64), self.ex_basis, axes=1)
        return v

    def save(self, path: PathLike) -> None:
        """Write the model to an ``.npz`` file (atomically)."""
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, mean=self.mean, id_basis=self.id_basis, id_std=self.id_std, ex_basis=self.ex_basis,
                         ex_std=self.ex_std, faces=self.faces, info=np.array(json.dumps(self.info)))

    @classmethod
    def load(cls, path: PathLike) -> "LinearHeadModel":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"linear model not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: np.asarray(z[k]) for k in ("mean", "id_basis", "id_std", "ex_basis", "ex_std", "faces")}
                info = json.loads(str(z["info"]))
        except (KeyError, ValueError, OSError) as e:
            raise ValueError(f"{path}: not a linear head model ({e})") from e
        return cls(info=info, **arrays)


def build_linear_model(neutrals: np.ndarray, offsets: np.ndarray, faces: np.ndarray, n_id: Optional[int] = None,
                       n_ex: Optional[int] = None, info: Optional[Dict[str, object]] = None) -> LinearHeadModel:
    """PCA model from neutral registrations ``(S, V, 3)`` and expression offsets ``(M, V, 3)``.

    ``n_id`` / ``n_ex``: maximum numbers of components (default: all with non-zero variance).
    """
    neutrals = np.asarray(neutrals, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.float64)
    if neutrals.ndim != 3 or neutrals.shape[2] != 3 or len(neutrals) == 0:
        raise ValueError(f"neutrals must be (S >= 1, V, 3), got shape {neutrals.shape}")
    v = neutrals.shape[1]
    if offsets.size == 0:
        offsets = np.zeros((0, v, 3))
    if offsets.ndim != 3 or offsets.shape[1:] != (v, 3):
        raise ValueError(f"offsets must be (M, {v}, 3), got shape {offsets.shape}")
    mean, id_basis, id_std = pca_basis(neutrals.reshape(len(neutrals), -1), n_id, center=True)
    _, ex_basis, ex_std = pca_basis(offsets.reshape(len(offsets), -1), n_ex, center=False)
    return LinearHeadModel(mean=mean.reshape(v, 3), id_basis=id_basis.reshape(-1, v, 3), id_std=id_std,
                           ex_basis=ex_basis.reshape(-1, v, 3), ex_std=ex_std,
                           faces=np.asarray(faces, dtype=np.int64), info=dict(info or {}))


def linear_model_from_dataset(manager, subjects: Sequence[int], n_id: Optional[int] = None,
                              n_ex: Optional[int] = None, progress: bool = False) -> LinearHeadModel:
    """PCA model from the registrations of ``subjects`` (a :class:`nphm.data.DataManager`'s).

    Identity: each subject's neutral-open registration; expressions: every other expression on
    disk (bad scans excluded) minus that neutral.

    Raises:
        ValueError: no subjects, or registrations of different topologies (naming the file).
    """
    from tqdm import tqdm

    subjects = [int(s) for s in subjects]
    if not subjects:
        raise ValueError("no training subjects for the linear model")
    neutrals: List[np.ndarray] = []
    offsets: List[np.ndarray] = []
    faces = None
    for subject in tqdm(subjects, desc="linear model: registrations", unit="subject", disable=not progress):
        neutral_id = manager.neutral_expression(subject, "open")
        for expression in [neutral_id] + [e for e in manager.expressions(subject) if e != neutral_id]:
            mesh = manager.load_registration(subject, expression)
            if faces is None:
                faces, n_vertices = np.asarray(mesh.faces, dtype=np.int64), len(mesh.vertices)
            if len(mesh.vertices) != n_vertices or not np.array_equal(np.asarray(mesh.faces), faces):
                raise ValueError(f"{manager.registration_path(subject, expression)}: topology differs from the "
                                 "first registration")
            verts = np.asarray(mesh.vertices, dtype=np.float64)
            if expression == neutral_id:
                neutrals.append(verts)
            else:
                offsets.append(verts - neutrals[-1])
    info = {"subjects": subjects, "n_neutrals": len(neutrals), "n_offsets": len(offsets)}
    return build_linear_model(np.stack(neutrals), np.stack(offsets) if offsets else np.zeros((0,) + neutrals[0].shape),
                              faces, n_id, n_ex, info)


# --------------------------------------------------------------------------------- least squares
def _jacobian(basis: np.ndarray, tri: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """(3N, n): derivative of the barycentric points ``sum_j bary_j V[tri_j]`` w.r.t. the
    coefficients of ``basis (n, V, 3)``; rows ordered (point, coordinate)."""
    n = basis.shape[0]
    if n == 0 or len(tri) == 0:
        return np.zeros((3 * len(tri), n))
    corners = basis[:, tri]  # (n, N, 3 corners, 3 coords)
    return np.einsum("pj,mpjc->pcm", bary, corners, optimize=True).reshape(-1, n)


def _check_correspondences(model: LinearHeadModel, item: Correspondences, k: int) -> Correspondences:
    points, face_ids, bary = (np.asarray(a) for a in item)
    n = len(points)
    if points.shape != (n, 3) or face_ids.shape != (n,) or bary.shape != (n, 3):
        raise ValueError(f"correspondences {k}: expected points (N, 3), face ids (N,), barycentric (N, 3); "
                         f"got {points.shape}, {face_ids.shape}, {bary.shape}")
    if not (np.all(np.isfinite(points)) and np.all(np.isfinite(bary))):
        raise ValueError(f"correspondences {k}: NaN or infinite values")
    if n and (face_ids.min() < 0 or face_ids.max() >= len(model.faces)):
        raise ValueError(f"correspondences {k}: face ids outside [0, {len(model.faces)})")
    return points.astype(np.float64), face_ids.astype(np.int64), bary.astype(np.float64)


def solve_coefficients(model: LinearHeadModel, correspondences: Sequence[Correspondences],
                       noise_std: float = 0.004, prior_weight: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
    """Regularised least-squares coefficients for fixed correspondences (module docstring).

    Args:
        correspondences: per observed cloud ``k``: points (N_k, 3) and their closest points on
            the mesh as face ids (N_k,) and barycentric coordinates (N_k, 3). A cloud without
            correspondences gets ``beta_k = 0``.
        noise_std: assumed standard deviation of the point residuals (nphm units).
        prior_weight: scale of the Gaussian prior on the coefficients (0: plain least squares).
    Returns:
        ``(alpha (n_id,), betas (K, n_ex))``.
    """
    if not correspondences:
        raise ValueError("no observed point clouds")
    if noise_std <= 0 or prior_weight < 0:
        raise ValueError(f"need noise_std > 0 and prior_weight >= 0, got {noise_std}, {prior_weight}")
    n_id, n_ex, k_total = model.n_id, model.n_ex, len(correspondences)
    size = n_id + k_total * n_ex
    hessian = np.zeros((size, size))
    gradient = np.zeros(size)
    w = 1.0 / noise_std ** 2
    for k, item in enumerate(correspondences):
        points, face_ids, bary = _check_correspondences(model, item, k)
        if len(points) == 0:
            continue
        tri = model.faces[face_ids]
        target = (points - np.einsum("pj,pjc->pc", bary, model.mean[tri])).reshape(-1)
        j_id = _jacobian(model.id_basis, tri, bary)
        j_ex = _jacobian(model.ex_basis, tri, bary)
        sl = slice(n_id + k * n_ex, n_id + (k + 1) * n_ex)
        # einsum instead of BLAS: these products are small, and a multi-threaded BLAS slows
        # down by orders of magnitude when the cores are busy with other work
        hessian[:n_id, :n_id] += w * np.einsum("pi,pj->ij", j_id, j_id)
        cross = w * np.einsum("pi,pj->ij", j_id, j_ex)
        hessian[:n_id, sl] += cross
        hessian[sl, :n_id] += cross.T
        hessian[sl, sl] += w * np.einsum("pi,pj->ij", j_ex, j_ex)
        gradient[:n_id] += w * np.einsum("pi,p->i", j_id, target)
        gradient[sl] += w * np.einsum("pi,p->i", j_ex, target)
    prior = np.concatenate([1.0 / model.id_std ** 2, np.tile(1.0 / model.ex_std ** 2, k_total)])
    hessian[np.diag_indices(size)] += prior_weight * prior
    if size == 0:
        return np.zeros(0), np.zeros((k_total, 0))
    try:
        x = scipy.linalg.solve(hessian, gradient, assume_a="pos")
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):  # singular without prior: least-norm solution
        x = np.linalg.lstsq(hessian, gradient, rcond=None)[0]
    return x[:n_id], x[n_id:].reshape(k_total, n_ex)


# ---------------------------------------------------------------------------------------- fitting
@dataclass(frozen=True)
class PCAFitSettings:
    """Knobs of :func:`fit_linear_model` (distances in nphm units, 1 mm ~ 0.004).

    Attributes:
        iterations: correspondence / solve rounds.
        noise_std, prior_weight: see :func:`solve_coefficients`.
        max_distance: correspondences farther than this are dropped.
        keep_fraction: of the remaining ones, only the closest ``keep_fraction`` are used.
    """

    iterations: int = 10
    noise_std: float = 0.004
    prior_weight: float = 1.0
    max_distance: float = 0.1
    keep_fraction: float = 0.95

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if not 0.0 < self.keep_fraction <= 1.0:
            raise ValueError(f"keep_fraction must lie in (0, 1], got {self.keep_fraction}")
        if self.max_distance <= 0:
            raise ValueError(f"max_distance must be positive, got {self.max_distance}")


@dataclass
class LinearFit:
    """Result of :func:`fit_linear_model`.

    Attributes:
        alpha: (n_id,); betas: (K, n_ex); vertices: K arrays (V, 3), one posed mesh per cloud.
        history: per iteration the mean distance of the observed points to the mesh before the
            update (``mean_distance``) and the fraction of correspondences used (``used``);
            the last entry (``iteration == iterations``) is measured on the final meshes.
    """

    alpha: np.ndarray
    betas: np.ndarray
    vertices: List[np.ndarray]
    history: List[Dict[str, float]]


def _check_observations(observations: Sequence[np.ndarray]) -> List[np.ndarray]:
    if observations is None or len(observations) == 0:
        raise ValueError("no observed point clouds to fit")
    out = []
    for k, pts in enumerate(observations):
        pts = np.asarray(pts, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"observation {k}: expected points (N, 3), got shape {pts.shape}")
        if len(pts) == 0:
            raise ValueError(f"observation {k}: no points")
        if not np.all(np.isfinite(pts)):
            raise ValueError(f"observation {k}: {int((~np.isfinite(pts)).any(axis=1).sum())} points with NaN or "
                             "infinite coordinates")
        out.append(np.ascontiguousarray(pts))
    return out


def closest_points(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray
                   ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closest surface points of a mesh: ``(distances (N,), face ids (N,), barycentric (N, 3))``."""
    import point_cloud_utils as pcu

    d, fid, bc = pcu.closest_points_on_mesh(np.ascontiguousarray(points, dtype=np.float64),
                                            np.ascontiguousarray(vertices, dtype=np.float64),
                                            np.ascontiguousarray(faces, dtype=np.int64))
    return np.asarray(d, dtype=np.float64), np.asarray(fid, dtype=np.int64), np.asarray(bc, dtype=np.float64)


def _select(distances: np.ndarray, settings: PCAFitSettings) -> np.ndarray:
    keep = distances <= settings.max_distance
    if settings.keep_fraction < 1.0 and keep.any():
        keep &= distances <= np.quantile(distances[keep], settings.keep_fraction)
    return keep


def fit_linear_model(model: LinearHeadModel, observations: Sequence[np.ndarray],
                     settings: PCAFitSettings = PCAFitSettings(), progress: bool = False,
                     desc: str = "linear fit") -> LinearFit:
    """Fit one subject: ``observations`` are K point clouds (N_k, 3), nphm frame, one per
    expression; the identity is shared, each cloud gets its own expression coefficients.

    Raises:
        ValueError: no clouds, an empty cloud or NaN/infinite coordinates (naming the cloud).
    """
    from tqdm import tqdm

    observations = _check_observations(observations)
    alpha = np.zeros(model.n_id)
    betas = np.zeros((len(observations), model.n_ex))
    history: List[Dict[str, float]] = []
    for it in tqdm(range(settings.iterations + 1), desc=desc, disable=not progress, leave=False):
        correspondences, dist_sum, n_used, n_total = [], 0.0, 0, 0
        for k, pts in enumerate(observations):
            d, fid, bc = closest_points(pts, model.vertices(alpha, betas[k]), model.faces)
            keep = _select(d, settings)
            correspondences.append((pts[keep], fid[keep], bc[keep]))
            dist_sum += float(d.sum())
            n_used += int(keep.sum())
            n_total += len(pts)
        history.append({"iteration": it, "mean_distance": dist_sum / n_total, "used": n_used / n_total})
        if it == settings.iterations:  # the last round only measures the final fit
            break
        alpha, betas = solve_coefficients(model, correspondences, settings.noise_std, settings.prior_weight)
    vertices = [model.vertices(alpha, b) for b in betas]
    return LinearFit(alpha=alpha, betas=betas, vertices=vertices, history=history)


__all__ = [
    "Correspondences",
    "LinearFit",
    "LinearHeadModel",
    "PCAFitSettings",
    "build_linear_model",
    "closest_points",
    "fit_linear_model",
    "linear_model_from_dataset",
    "pca_basis",
    "solve_coefficients",
]
