"""Marching-cubes extraction against analytic shapes, and sparse and traced against dense evaluation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nphm.evaluation.metrics import vertex_set_distance
from nphm.mesh import extract_mesh, grid_points, sdf_grid

FIT_MIN = (-0.55, -0.5, -0.95)  # the release's fitting box (non-cubic, off-centre)
FIT_MAX = (0.55, 0.75, 0.4)


def sphere_sdf(centre=(0.0, 0.0, 0.0), radius=0.3):
    c = torch.tensor(centre, dtype=torch.float32)

    def fn(p: torch.Tensor) -> torch.Tensor:
        return (p - c.to(p.device)).norm(dim=-1) - radius

    return fn


def torus_sdf(big=0.3, small=0.1, centre=(0.0, 0.0, 0.0)):
    c = torch.tensor(centre, dtype=torch.float32)

    def fn(p: torch.Tensor) -> torch.Tensor:
        p = p - c.to(p.device)
        q = torch.stack([torch.sqrt(p[:, 0] ** 2 + p[:, 2] ** 2) - big, p[:, 1]], dim=-1)
        return q.norm(dim=-1) - small

    return fn


def bumpy_sdf(p: torch.Tensor) -> torch.Tensor:
    """Not a distance: bumpy surface and a value scale that varies in space (|grad| up to ~1.6)."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    d = p.norm(dim=-1) - 0.3 - 0.03 * torch.sin(9 * x) * torch.sin(9 * y) * torch.sin(9 * z)
    return d * (1.0 + 0.3 * torch.sin(4 * x + 1.0) * torch.cos(3 * y) * torch.sin(2 * z + 0.5))


def voxel(bmin, bmax, res):
    return float(np.max((np.asarray(bmax) - np.asarray(bmin)) / (res - 1)))


@pytest.fixture(scope="module")
def sphere_pair():
    """Dense and sparse meshes of an off-centre sphere in the fitting box at resolution 128."""
    fn = sphere_sdf((0.05, 0.1, -0.2), 0.3)
    dense = extract_mesh(fn, FIT_MIN, FIT_MAX, 128, mode="dense", device="cpu")
    sparse = extract_mesh(fn, FIT_MIN, FIT_MAX, 128, mode="sparse", device="cpu")
    return dense, sparse


def assert_same_mesh(mesh, ref):
    np.testing.assert_array_equal(mesh.vertices, ref.vertices)
    np.testing.assert_array_equal(mesh.faces, ref.faces)


def test_sphere_geometry(sphere_pair):
    mesh, _ = sphere_pair
    centre, r = np.array([0.05, 0.1, -0.2]), 0.3
    h = voxel(FIT_MIN, FIT_MAX, 128)
    radii = np.linalg.norm(mesh.vertices - centre, axis=1)
    assert abs(radii.mean() - r) < 0.02 * h
    assert np.abs(radii - r).max() < 0.02 * h
    # world frame, not voxel indices: the vertices are centred on the sphere's centre
    np.testing.assert_allclose(mesh.vertices.mean(axis=0), centre, atol=0.05 * h)
    assert mesh.area == pytest.approx(4 * math.pi * r**2, rel=0.005)
    assert mesh.is_watertight
    assert mesh.volume == pytest.approx(4 / 3 * math.pi * r**3, rel=0.005)  # positive: outward winding
    outward = np.einsum("ij,ij->i", mesh.face_normals, mesh.triangles_center - centre)
    assert np.all(outward > 0)


def test_sphere_dense_sparse_identical(sphere_pair):
    dense, sparse = sphere_pair
    np.testing.assert_array_equal(sparse.vertices, dense.vertices)
    np.testing.assert_array_equal(sparse.faces, dense.faces)
    assert dense.metadata["n_evaluated"] == dense.metadata["n_grid"] == 128**3
    assert sparse.metadata["n_grid"] == 128**3
    assert sparse.metadata["n_evaluated"] < 0.15 * 128**3


def test_sphere_traced_identical(sphere_pair):
    dense, sparse = sphere_pair
    traced = extract_mesh(sphere_sdf((0.05, 0.1, -0.2), 0.3), FIT_MIN, FIT_MAX, 128, mode="traced", device="cpu")
    assert_same_mesh(traced, dense)
    assert traced.metadata["n_evaluated"] < 0.6 * sparse.metadata["n_evaluated"]


def test_torus_area_and_dense_sparse():
    fn = torus_sdf(0.3, 0.1, centre=(0.0, 0.1, -0.25))
    res = 112
    dense = extract_mesh(fn, FIT_MIN, FIT_MAX, res, mode="dense", device="cpu")
    sparse = extract_mesh(fn, FIT_MIN, FIT_MAX, res, device="cpu")
    assert dense.area == pytest.approx(4 * math.pi**2 * 0.3 * 0.1, rel=0.005)
    assert dense.volume == pytest.approx(2 * math.pi**2 * 0.3 * 0.1**2, rel=0.005)
    assert dense.is_watertight
    assert dense.euler_number == 0  # genus one
    np.testing.assert_array_equal(sparse.vertices, dense.vertices)
    np.testing.assert_array_equal(sparse.faces, dense.faces)
    assert sparse.metadata["n_evaluated"] < 0.2 * res**3
    assert_same_mesh(extract_mesh(fn, FIT_MIN, FIT_MAX, res, mode="traced", device="cpu"), dense)


def test_bumpy_non_eikonal_dense_sparse():
    res = 80
    dense_grid, _ = sdf_grid(bumpy_sdf, FIT_MIN, FIT_MAX, res, mode="dense", device="cpu")
    # the SDF really is not eikonal: finite-difference gradient norms well away from 1
    h = (np.asarray(FIT_MAX) - np.asarray(FIT_MIN)) / (res - 1)
    gnorm = np.sqrt(sum(g**2 for g in np.gradient(dense_grid.astype(np.float64), *h)))
    assert 1.3 < gnorm.max() < 2.0 and gnorm.min() < 0.8

    dense = extract_mesh(bumpy_sdf, FIT_MIN, FIT_MAX, res, mode="dense", device="cpu")
    sparse = extract_mesh(bumpy_sdf, FIT_MIN, FIT_MAX, res, device="cpu")
    np.testing.assert_array_equal(sparse.vertices, dense.vertices)
    np.testing.assert_array_equal(sparse.faces, dense.faces)
    assert vertex_set_distance(np.asarray(sparse.vertices), np.asarray(dense.vertices)) < 1e-5
    assert sparse.is_watertight
    assert_same_mesh(extract_mesh(bumpy_sdf, FIT_MIN, FIT_MAX, res, mode="traced", device="cpu"), dense)


def test_sparse_grid_signs_match_dense():
    """Unevaluated points of the sparse grid carry the true sign; also for a padded lattice."""
    fn = sphere_sdf((0.3, 0.35, 0.25), 0.3)  # crosses the max faces of the box
    bmin, bmax = (-0.4, -0.4, -0.4), (0.5, 0.5, 0.5)
    res = 101  # res - 1 is not a multiple of the coarse step: exercises padding
    dense, n_dense = sdf_grid(fn, bmin, bmax, res, mode="dense", device="cpu")
    sparse, n_sparse = sdf_grid(fn, bmin, bmax, res, mode="sparse", device="cpu")
    assert n_dense == res**3 and n_sparse < 0.3 * res**3
    np.testing.assert_array_equal(np.sign(sparse), np.sign(dense))
    # points next to a sign change are exact
    crossing = np.zeros_like(dense, dtype=bool)
    for ax in range(3):
        sl0 = [slice(None)] * 3
        sl1 = [slice(None)] * 3
        sl0[ax], sl1[ax] = slice(0, -1), slice(1, None)
        flip = np.sign(dense[tuple(sl0)]) != np.sign(dense[tuple(sl1)])
        crossing[tuple(sl0)] |= flip
        crossing[tuple(sl1)] |= flip
    assert crossing.any()
    np.testing.assert_array_equal(sparse[crossing], dense[crossing])

    dm = extract_mesh(fn, bmin, bmax, res, mode="dense", device="cpu")
    sm = extract_mesh(fn, bmin, bmax, res, device="cpu")
    np.testing.assert_array_equal(sm.vertices, dm.vertices)
    assert np.all(sm.vertices <= np.asarray(bmax) + 1e-6)  # clipped by the box, open mesh
    assert not dm.is_watertight
    assert_same_mesh(extract_mesh(fn, bmin, bmax, res, mode="traced", device="cpu"), dm)
    with pytest.raises(ValueError, match="traced"):
        sdf_grid(fn, bmin, bmax, res, mode="traced", device="cpu")


def test_traced_walk_follows_thin_parts_and_misses_thin_islands():
    """A slab thinner than a voxel centred on an odd grid plane holds no point of the lattice of
    every second grid point, so no 2-voxel cell straddles it: joined to a sphere, the walk follows
    it from the sphere to the box's faces (the mesh equals the dense one); standing apart (the
    documented limit) it is missed, while the sparse mode finds it."""
    bmin, bmax = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    res = 33  # spacing 1/32; the lattice of every second point: even indices
    h = 1.0 / 32

    def slab(p: torch.Tensor) -> torch.Tensor:  # around the odd plane x = 17 h, slightly wavy
        return (p[:, 0] - 17 * h - 0.002 * torch.sin(7 * p[:, 1])).abs() - 0.4 * h

    def sphere(centre):
        return lambda p: (p - torch.tensor(centre)).norm(dim=-1) - 0.15

    joined = lambda p: torch.minimum(sphere((17 * h, 0.5, 0.5))(p), slab(p))  # noqa: E731
    apart = lambda p: torch.minimum(sphere((0.25, 0.25, 0.25))(p), slab(p))  # noqa: E731
    dense = extract_mesh(joined, bmin, bmax, res, mode="dense", device="cpu")
    traced = extract_mesh(joined, bmin, bmax, res, mode="traced", device="cpu")
    assert_same_mesh(traced, dense)
    far = np.linalg.norm(np.asarray(traced.vertices)[:, 1:] - 0.5, axis=1) > 0.3
    assert far.sum() > 100  # the slab away from the sphere is meshed

    assert_same_mesh(extract_mesh(slab, bmin, bmax, res, mode="sparse", device="cpu"),
                     extract_mesh(slab, bmin, bmax, res, mode="dense", device="cpu"))
    with pytest.raises(ValueError, match="no surface"):
        extract_mesh(slab, bmin, bmax, res, mode="traced", device="cpu")
    sphere_only = extract_mesh(sphere((0.25, 0.25, 0.25)), bmin, bmax, res, mode="dense", device="cpu")
    assert_same_mesh(extract_mesh(apart, bmin, bmax, res, mode="traced", device="cpu"), sphere_only)
    assert len(extract_mesh(apart, bmin, bmax, res, mode="dense", device="cpu").faces) > len(sphere_only.faces)


def test_grid_points_order_matches_grid():
    fn = sphere_sdf((0.1, 0.0, -0.1), 0.25)
    bmin, bmax = (-0.5, -0.4, -0.3), (0.4, 0.5, 0.6)
    pts = grid_points(bmin, bmax, 9)
    assert pts.shape == (729, 3) and pts.dtype == torch.float32
    np.testing.assert_allclose(pts[0].numpy(), bmin, atol=1e-7)
    np.testing.assert_allclose(pts[-1].numpy(), bmax, atol=1e-7)
    np.testing.assert_allclose(pts[1].numpy(), [-0.5, -0.4, -0.3 + 0.9 / 8], atol=1e-7)  # z fastest
    grid, _ = sdf_grid(fn, bmin, bmax, 9, mode="dense", device="cpu")
    np.testing.assert_array_equal(grid.reshape(-1), fn(pts).numpy())


def test_level():
    bmin, bmax = (-0.5, -0.5, -0.5), (0.5, 0.5, 0.5)
    h = voxel(bmin, bmax, 64)
    mesh = extract_mesh(sphere_sdf(radius=0.25), bmin, bmax, 64, level=0.05, device="cpu")
    assert abs(np.linalg.norm(mesh.vertices, axis=1).mean() - 0.3) < 0.02 * h


def test_lipschitz_bound_is_used():
    """A small, steep blob inside one coarse cell (no coarse sign change) is only found
    when the Lipschitz bound covers the field's slope."""
    bmin, bmax = (-0.5, -0.5, -0.5), (0.5, 0.5, 0.5)
    centre = -0.5 + 28 / 63  # centre of the coarse cell spanning fine indices 24..32
    small = sphere_sdf((centre,) * 3, 0.04)
    steep = lambda p: 5.0 * small(p)  # noqa: E731  |grad| = 5
    dense = extract_mesh(steep, bmin, bmax, 64, mode="dense", device="cpu")
    assert dense.is_watertight
    sparse = extract_mesh(steep, bmin, bmax, 64, lipschitz=5.0, device="cpu")
    np.testing.assert_array_equal(sparse.vertices, dense.vertices)
    with pytest.raises(ValueError, match="all outside"):  # bound too small: blob skipped
        extract_mesh(steep, bmin, bmax, 64, lipschitz=1.0, device="cpu")


@pytest.mark.parametrize("mode", ["dense", "sparse", "traced"])
def test_no_surface_raises(mode):
    with pytest.raises(ValueError, match="all outside"):
        extract_mesh(lambda p: p.norm(dim=-1) + 0.1, (-1, -1, -1), (1, 1, 1), 32, mode=mode, device="cpu")
    with pytest.raises(ValueError, match="all inside"):
        extract_mesh(lambda p: p.norm(dim=-1) - 10.0, (-1, -1, -1), (1, 1, 1), 32, mode=mode, device="cpu")
    # a sphere entirely outside the box
    with pytest.raises(ValueError, match="all outside"):
        extract_mesh(sphere_sdf((3.0, 0.0, 0.0), 0.5), (-1, -1, -1), (1, 1, 1), 32, mode=mode, device="cpu")


def test_bad_arguments():
    fn = sphere_sdf()
    with pytest.raises(ValueError, match="bounds_max"):
        extract_mesh(fn, (0, 0, 0), (1, -1, 1), 16, device="cpu")
    with pytest.raises(ValueError, match="mode"):
        extract_mesh(fn, (-1, -1, -1), (1, 1, 1), 16, mode="octree", device="cpu")
    with pytest.raises(ValueError, match="non-finite"):
        extract_mesh(lambda p: p[:, 0] / 0.0, (-1, -1, -1), (1, 1, 1), 16, device="cpu")
    with pytest.raises(ValueError, match="values for"):
        extract_mesh(lambda p: p, (-1, -1, -1), (1, 1, 1), 16, device="cpu")


@pytest.mark.parametrize("mode", ["dense", "sparse", "traced"])
def test_batches_bounded_and_counted(mode):
    calls = []
    base = sphere_sdf((0.0, 0.05, -0.05), 0.3)

    def counting(p: torch.Tensor) -> torch.Tensor:
        assert p.dtype == torch.float32 and p.ndim == 2 and p.shape[1] == 3
        assert not torch.is_grad_enabled()
        calls.append(p.shape[0])
        return base(p).unsqueeze(-1)  # (N, 1) is accepted too

    mesh = extract_mesh(counting, (-0.5, -0.5, -0.5), (0.5, 0.5, 0.5), 48, mode=mode, batch_points=1000, device="cpu")
    assert len(calls) > 1 and max(calls) <= 1000 and min(calls) >= 1
    assert sum(calls) == mesh.metadata["n_evaluated"]
    assert mesh.metadata["n_grid"] == 48**3
    if mode == "dense":
        assert sum(calls) == 48**3
    else:
        assert sum(calls) < 48**3


def test_coarse_resolution_does_not_change_mesh():
    fn = sphere_sdf((0.02, -0.03, 0.01), 0.28)
    bmin, bmax = (-0.4, -0.4, -0.4), (0.4, 0.4, 0.4)
    ref = extract_mesh(fn, bmin, bmax, 64, mode="dense", device="cpu")
    for coarse in (3, 9, 17, 64):
        mesh = extract_mesh(fn, bmin, bmax, 64, coarse_resolution=coarse, device="cpu")
        np.testing.assert_array_equal(mesh.vertices, ref.vertices)


def test_refinement_is_per_child_cell():
    """A cell's child is refined only when the cell corner it touches is within the bound of one
    child diagonal: the finest lattice points evaluated lie within (bound + 1) voxel diagonals of
    a distance field's surface (refining whole cells would reach (bound + 2) diagonals)."""
    centre, radius = (0.05, 0.1, -0.2), 0.3
    fn = sphere_sdf(centre, radius)
    seen = []

    def recording(p):
        seen.append(p.clone())
        return fn(p)

    res = 97  # res - 1 = 96: the coarse lattices need no padding
    lipschitz, margin = 2.0, 1.5
    mesh = extract_mesh(recording, FIT_MIN, FIT_MAX, res, lipschitz=lipschitz, safety_margin=margin, device="cpu")
    dense = extract_mesh(fn, FIT_MIN, FIT_MAX, res, mode="dense", device="cpu")
    np.testing.assert_array_equal(mesh.faces, dense.faces)
    pts = torch.cat(seen).double()
    spacing = (torch.tensor(FIT_MAX, dtype=torch.float64) - torch.tensor(FIT_MIN, dtype=torch.float64)) / (res - 1)
    idx = torch.round((pts - torch.tensor(FIT_MIN, dtype=torch.float64)) / spacing).long()
    finest = (idx % 2 == 1).any(dim=1)  # not on the step-2 lattice
    dist = ((pts - torch.tensor(centre, dtype=torch.float64)).norm(dim=-1) - radius).abs()
    diag = float(spacing.norm())
    assert finest.sum() > 1000
    assert dist[finest].max() <= (lipschitz * margin + 1) * diag * (1 + 1e-4)
    # and the shell really is used up to near that distance (the bound is not vacuous)
    assert dist[finest].max() > (lipschitz * margin) * diag


def test_shipped_model_sparse_mesh_equals_dense():
    """On the shipped trained NPHM model (a steep learned field far from its data, 40 members),
    coarse-to-fine extraction with both bounds gives the dense grid's faces, and its vertices up to
    float32 rounding (the sparse query groups the same points into other blocks)."""
    from nphm import paths
    from nphm.fitting import io as fio
    from nphm.query import sdf_function

    cfg = fio.load_fitting_config(paths.CONFIGS / "fitting_nphm_cpu.yaml")
    identity = fio.load_models(cfg.replace(exp_name_expr=None), "cpu", paths.PRETRAINED).identity
    z = 0.05 * torch.randn(identity.lat_dim, generator=torch.Generator().manual_seed(3))
    sdf = sdf_function(identity, z)
    res = 56
    dense = extract_mesh(sdf, FIT_MIN, FIT_MAX, res, mode="dense", device="cpu")
    for mode, lipschitz in (("sparse", 2.0), ("sparse", "auto"), ("traced", "auto")):
        sparse = extract_mesh(sdf, FIT_MIN, FIT_MAX, res, mode=mode, lipschitz=lipschitz, device="cpu")
        np.testing.assert_array_equal(sparse.faces, dense.faces)
        np.testing.assert_allclose(sparse.vertices, dense.vertices, rtol=0, atol=1e-6)
        assert sparse.metadata["n_evaluated"] < 0.5 * res**3
