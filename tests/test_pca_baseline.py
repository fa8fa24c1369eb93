"""Linear (PCA) baseline: basis, least squares, point-cloud fitting, runner, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh

from nphm.baselines.pca import (
    LinearHeadModel,
    PCAFitSettings,
    build_linear_model,
    fit_linear_model,
    pca_basis,
    solve_coefficients,
)
from nphm.baselines.runner import fit_pca_subjects


# ------------------------------------------------------------------------------------ fixtures
def _sphere():
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64)


def _radial(vertices: np.ndarray, fields) -> np.ndarray:
    """(n, V, 3): radial displacements ``v * f(v)`` for scalar fields f (shape changes that
    closest-point fitting can see, unlike sliding along the surface)."""
    return np.stack([vertices * f(vertices)[:, None] for f in fields])


ID_FIELDS = [lambda v: v[:, 0], lambda v: v[:, 1] ** 2, lambda v: v[:, 0] * v[:, 2], lambda v: v[:, 2]]
EX_FIELDS = [lambda v: v[:, 1] * v[:, 2], lambda v: v[:, 0] ** 2 - v[:, 2] ** 2, lambda v: v[:, 1]]


@pytest.fixture(scope="module")
def toy_model() -> LinearHeadModel:
    verts, faces = _sphere()
    rng = np.random.default_rng(0)
    id_dirs, ex_dirs = _radial(verts, ID_FIELDS), _radial(verts, EX_FIELDS)
    neutrals = verts + np.tensordot(rng.normal(0, 0.15, (12, len(ID_FIELDS))), id_dirs, axes=1)
    offsets = np.tensordot(rng.normal(0, 0.15, (10, len(EX_FIELDS))), ex_dirs, axes=1)
    return build_linear_model(neutrals, offsets, faces, info={"toy": True})


def _surface_points(vertices: np.ndarray, faces: np.ndarray, n: int, rng) -> np.ndarray:
    fid = rng.integers(0, len(faces), n)
    bary = rng.dirichlet(np.ones(3), n)
    return np.einsum("pj,pjc->pc", bary, vertices[faces[fid]])


# ---------------------------------------------------------------------------------- PCA basis
def test_pca_basis_matches_covariance_eigendecomposition():
    rng = np.random.default_rng(1)
    samples = rng.normal(size=(9, 5)) @ rng.normal(size=(5, 7))
    mean, basis, std = pca_basis(samples)
    cov = np.cov(samples, rowvar=False)  # independent: eigenvectors of the sample covariance
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1][: len(std)]
    np.testing.assert_allclose(mean, samples.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(std ** 2, evals[order], rtol=1e-9)
    np.testing.assert_allclose(np.abs(basis @ evecs[:, order]), np.eye(len(std)), atol=1e-8)
    assert len(std) == 5  # rank 5 data, centring does not lose a direction here (9 > 5 + 1)


def test_uncentred_basis_and_null_directions_dropped():
    rng = np.random.default_rng(2)
    dirs = np.linalg.qr(rng.normal(size=(6, 2)))[0].T  # 2 orthonormal directions in R^6
    samples = rng.normal(size=(8, 2)) @ dirs
    mean, basis, std = pca_basis(samples, center=False)
    assert np.all(mean == 0) and basis.shape == (2, 6)
    # the basis spans the same plane as the generating directions
    np.testing.assert_allclose(basis @ basis.T, np.eye(2), atol=1e-10)
    np.testing.assert_allclose(np.linalg.svd(basis @ dirs.T)[1], 1.0, atol=1e-10)
    assert pca_basis(samples, n_components=1, center=False)[1].shape == (1, 6)


# ------------------------------------------------------------------------------- least squares
def test_solve_coefficients_matches_brute_force_lstsq(toy_model):
    model = toy_model
    rng = np.random.default_rng(3)
    clouds = []
    for n in (15, 0, 22):  # a cloud without correspondences gets beta = 0
        clouds.append((rng.normal(size=(n, 3)), rng.integers(0, len(model.faces), n), rng.dirichlet(np.ones(3), n)))
    noise_std, prior_weight = 0.05, 0.3
    alpha, betas = solve_coefficients(model, clouds, noise_std, prior_weight)

    # brute force: the stacked, weighted design matrix built row by row, plus prior rows
    n_id, n_ex, k_total = model.n_id, model.n_ex, len(clouds)
    rows, rhs = [], []
    for k, (pts, fid, bary) in enumerate(clouds):
        for i in range(len(pts)):
            tri = model.faces[fid[i]]
            for c in range(3):
                row = np.zeros(n_id + k_total * n_ex)
                for j in range(3):
                    row[:n_id] += bary[i, j] * model.id_basis[:, tri[j], c]
                    row[n_id + k * n_ex:n_id + (k + 1) * n_ex] += bary[i, j] * model.ex_basis[:, tri[j], c]
                rows.append(row / noise_std)
                rhs.append((pts[i, c] - sum(bary[i, j] * model.mean[tri[j], c] for j in range(3))) / noise_std)
    prior = np.concatenate([1 / model.id_std, np.tile(1 / model.ex_std, k_total)]) * np.sqrt(prior_weight)
    a = np.vstack([np.array(rows), np.diag(prior)])
    b = np.concatenate([rhs, np.zeros(len(prior))])
    x = np.linalg.lstsq(a, b, rcond=None)[0]
    np.testing.assert_allclose(alpha, x[:n_id], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(betas.ravel(), x[n_id:], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(betas[1], 0.0, atol=1e-12)


# -------------------------------------------------------------------------------------- fitting
def test_fit_recovers_known_coefficients(toy_model):
    model = toy_model
    rng = np.random.default_rng(4)
    alpha_true = rng.normal(size=model.n_id) * model.id_std
    betas_true = rng.normal(size=(2, model.n_ex)) * model.ex_std
    clouds = [_surface_points(model.vertices(alpha_true, b), model.faces, 2000, rng) for b in betas_true]
    settings = PCAFitSettings(iterations=40, prior_weight=0.0, keep_fraction=1.0, max_distance=1.0)
    fit = fit_linear_model(model, clouds, settings)
    np.testing.assert_allclose(fit.alpha, alpha_true, atol=2e-3 * np.abs(alpha_true).max())
    np.testing.assert_allclose(fit.betas, betas_true, atol=2e-3 * np.abs(betas_true).max())
    for v, b in zip(fit.vertices, betas_true):
        assert np.abs(v - model.vertices(alpha_true, b)).max() < 1e-3
    assert fit.history[-1]["mean_distance"] < 1e-2 * fit.history[0]["mean_distance"]


def test_prior_shrinks_towards_the_mean(toy_model):
    model = toy_model
    rng = np.random.default_rng(5)
    alpha_true = rng.normal(size=model.n_id) * model.id_std
    clouds = [_surface_points(model.vertices(alpha_true), model.faces, 300, rng)]
    weak = fit_linear_model(model, clouds, PCAFitSettings(iterations=15, prior_weight=0.0, keep_fraction=1.0))
    strong = fit_linear_model(model, clouds, PCAFitSettings(iterations=15, prior_weight=1e6, keep_fraction=1.0))
    assert np.linalg.norm(strong.alpha) < 0.1 * np.linalg.norm(weak.alpha)


def test_bad_input_gives_clear_errors(toy_model):
    good = np.zeros((10, 3))
    with pytest.raises(ValueError, match="no observed point clouds"):
        fit_linear_model(toy_model, [])
    with pytest.raises(ValueError, match="observation 1: no points"):
        fit_linear_model(toy_model, [good, np.zeros((0, 3))])
    bad = good.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="observation 0: 1 points with NaN"):
        fit_linear_model(toy_model, [bad])
    with pytest.raises(ValueError, match=r"expected points \(N, 3\)"):
        fit_linear_model(toy_model, [np.zeros((5, 2))])
    with pytest.raises(ValueError, match="face ids"):
        solve_coefficients(toy_model, [(good, np.full(10, len(toy_model.faces)), np.full((10, 3), 1 / 3))])
    with pytest.raises(ValueError, match="NaN"):
        build_linear_model(np.full((2, 4, 3), np.nan), np.zeros((0, 4, 3)), np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match="keep_fraction"):
        PCAFitSettings(keep_fraction=0.0)


def test_save_load_roundtrip(toy_model, tmp_path):
    path = tmp_path / "model.npz"
    toy_model.save(path)
    loaded = LinearHeadModel.load(path)
    for key in ("mean", "id_basis", "id_std", "ex_basis", "ex_std", "faces"):
        np.testing.assert_array_equal(getattr(loaded, key), getattr(toy_model, key))
    assert loaded.info == {"toy": True}
    with pytest.raises(FileNotFoundError):
        LinearHeadModel.load(tmp_path / "missing.npz")


# --------------------------------------------------------------------------------------- runner
class _FakeManager:
    """The part of DataManager that the fitting inputs need."""

    def __init__(self, folder: Path, clouds):
        self.folder, self.clouds = folder, clouds

    def test_expressions(self, subject):
        return sorted(self.clouds)

    def observation_path(self, subject, expression, back=False):
        return self.folder / f"{subject}_{expression}{'_back' if back else ''}.npy"

    def load_observation(self, subject, expression, back=False):
        return self.clouds[expression]


def test_runner_writes_release_names_and_skips_finished(toy_model, tmp_path):
    rng = np.random.default_rng(6)
    clouds = {e: _surface_points(toy_model.vertices(np.zeros(toy_model.n_id)), toy_model.faces, 200, rng)
              for e in (0, 3)}
    manager = _FakeManager(tmp_path, clouds)
    settings = PCAFitSettings(iterations=2)
    out = tmp_path / "fits"
    outcomes = list(fit_pca_subjects(manager, toy_model, [7], settings, out, figure=False, progress=False))
    assert [o.status for o in outcomes] == ["done"]
    for e in (0, 3):
        mesh = trimesh.load(out / f"7_{e}.ply", process=False)
        assert len(mesh.vertices) == toy_model.n_vertices
    assert json.loads((out / "7_fitting.json").read_text())["expressions"] == [0, 3]
    again = list(fit_pca_subjects(manager, toy_model, [7], settings, out, figure=False, progress=False))
    assert [o.status for o in again] == ["skipped"]
    broken = _FakeManager(tmp_path, {0: np.full((5, 3), np.nan)})
    failed = list(fit_pca_subjects(broken, toy_model, [8], settings, out, figure=False, progress=False))
    assert failed[0].status == "failed" and "NaN" in failed[0].message
