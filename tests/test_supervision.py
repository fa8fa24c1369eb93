"""Supervision sampling (identity and deformation), its storage and the batch scripts."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import point_cloud_utils as pcu
import pytest
import trimesh
from scipy.spatial import cKDTree

from nphm.data import DataManager
from nphm.preprocessing import (
    SupervisionError,
    open_deformation,
    open_identity,
    sample_correspondences,
    sample_deformation_supervision,
    sample_identity_supervision,
)
from nphm.preprocessing import storage
from nphm.preprocessing.sampling import (
    face_areas_and_normals,
    faces_within_mask,
    random_barycentric,
    sample_surface,
    vertex_normals,
)

REPO = Path(__file__).resolve().parents[1]


def _load_script(name):
    path = REPO / "scripts" / "data_processing" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _closest(mesh: trimesh.Trimesh, points: np.ndarray):
    """(distance (n,), face (n,), barycentric (n, 3)) of the closest mesh points."""
    return pcu.closest_points_on_mesh(np.ascontiguousarray(points, dtype=np.float64),
                                      np.ascontiguousarray(mesh.vertices, dtype=np.float64),
                                      np.ascontiguousarray(mesh.faces))


def _closest_distance(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    return _closest(mesh, points)[0]


# ----------------------------------------------------------------------------- sampling primitives
def test_random_barycentric_is_uniform_on_the_triangle():
    rng = np.random.default_rng(0)
    b = random_barycentric(200_000, rng)
    assert np.all(b >= 0) and np.allclose(b.sum(1), 1.0)
    # uniform on a triangle: each coordinate has mean 1/3 and variance 1/18
    assert np.allclose(b.mean(0), 1 / 3, atol=3e-3)
    assert np.allclose(b.var(0), 1 / 18, atol=2e-3)


def test_sample_surface_is_area_uniform_and_on_the_mesh():
    # two triangles, the second with three times the area of the first
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 0, 1], [5, 0, 1], [2, 2, 1]], dtype=float)
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    areas, normals = face_areas_and_normals(vertices, faces)
    assert np.allclose(areas, [0.5, 3.0])
    assert np.allclose(normals, [[0, 0, 1], [0, 0, 1]])
    s = sample_surface(vertices, faces, 70_000, np.random.default_rng(1))
    frac = np.mean(s.face_ids == 1)
    assert abs(frac - 3.0 / 3.5) < 0.01
    assert np.allclose(s.points[s.face_ids == 0, 2], 0.0) and np.allclose(s.points[s.face_ids == 1, 2], 1.0)
    assert np.allclose(s.normals, [0, 0, 1])


def test_sample_surface_sphere_normals():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.3)
    s = sample_surface(sphere.vertices, sphere.faces, 5000, np.random.default_rng(2))
    assert np.allclose(np.linalg.norm(s.normals, axis=1), 1.0)
    radial = s.points / np.linalg.norm(s.points, axis=1, keepdims=True)
    assert np.min(np.sum(radial * s.normals, axis=1)) > 0.999
    assert np.max(_closest_distance(sphere, s.points)) < 1e-9
    # vertex normals of a sphere are radial
    vn = vertex_normals(sphere.vertices, sphere.faces)
    assert np.min(np.sum(vn * sphere.vertices / 0.3, axis=1)) > 0.9999


# ----------------------------------------------------------------------------- identity supervision
def test_identity_supervision_split_and_neck_cut():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    region = sphere.vertices[sphere.vertices[:, 2] > 0.8]  # a cap around +z
    rng = np.random.default_rng(3)
    out = sample_identity_supervision(sphere.vertices, sphere.faces, region, lambda p: p[:, 1] > -0.5,
                                      n_samples=30_000, n_non_face=2_000, rng=rng, face_radius=0.2, block=7_000)
    assert out.face.dtype == np.float32 and out.face.shape[1] == 6 and out.non_face.shape == (2000, 6)
    for rows in (out.face, out.non_face):
        assert np.all(rows[:, 1] > -0.5)
        assert np.allclose(np.linalg.norm(rows[:, 3:], axis=1), 1.0, atol=1e-5)
        assert np.max(_closest_distance(sphere, rows[:, :3].astype(np.float64))) < 1e-6
    # brute-force face labels
    d_face = np.min(np.linalg.norm(out.face[:, None, :3] - region[None], axis=-1), axis=1)
    d_non = np.min(np.linalg.norm(out.non_face[:, None, :3] - region[None], axis=-1), axis=1)
    assert d_face.max() < 0.2 + 1e-6 and d_non.min() >= 0.2 - 1e-6
    # every face point is kept: their share matches the cap's share of the surface above the cut
    kept_fraction = out.n_kept / 30_000
    assert abs(kept_fraction - 0.75) < 0.02  # y > -0.5 on the unit sphere: (1 + 0.5) / 2
    assert len(out.face) > 0


# ----------------------------------------------------------------------------- correspondences
def _affine(points, A, b):
    return points @ A.T + b


def test_correspondences_follow_an_affine_map_exactly():
    rng = np.random.default_rng(4)
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    A = np.array([[1.1, 0.2, 0.0], [0.0, 0.9, 0.1], [0.05, 0.0, 1.2]])
    b = np.array([0.01, -0.02, 0.03])
    posed = _affine(mesh.vertices, A, b)
    # sigma 0: the target point is the affine image of the source point
    c0 = sample_correspondences(mesh.vertices, posed, mesh.faces, 3000, 0.0, rng)
    assert np.allclose(c0.target, _affine(c0.source, A, b), atol=1e-12)
    # sigma > 0: the same normal offset along each mesh's own face normal
    c = sample_correspondences(mesh.vertices, posed, mesh.faces, 3000, 0.01, rng)
    n_src = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).face_normals[c.face_ids]
    n_dst = trimesh.Trimesh(posed, mesh.faces, process=False).face_normals[c.face_ids]
    on_src = c.source - c.offsets[:, None] * n_src
    on_dst = c.target - c.offsets[:, None] * n_dst
    assert np.allclose(on_dst, _affine(on_src, A, b), atol=1e-12)
    assert abs(np.std(c.offsets) - 0.01) < 0.001


def test_deformation_supervision_uses_the_face_region_both_directions():
    rng = np.random.default_rng(5)
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    mask = mesh.vertices[:, 2] > 0.2
    posed = mesh.vertices + np.array([0.0, 0.1, 0.0]) * (mesh.vertices[:, 2:3] > 0)  # shift the front up
    pairs = sample_deformation_supervision(mesh.vertices, posed, mesh.faces, mask, 500, rng, sigmas=(0.0, 0.0))
    assert pairs.shape == (2000, 6) and pairs.dtype == np.float32
    region = trimesh.Trimesh(mesh.vertices, mesh.faces[faces_within_mask(mesh.faces, mask)], process=False)
    region_posed = trimesh.Trimesh(posed, region.faces, process=False)
    assert _closest_distance(region, pairs[:, :3].astype(np.float64)).max() < 1e-6
    assert _closest_distance(region_posed, pairs[:, 3:].astype(np.float64)).max() < 1e-6
    # the translated part of the face moves by exactly (0, 0.1, 0)
    front = pairs[:, 2] > 0.01
    assert np.allclose(pairs[front, 3:] - pairs[front, :3], [0.0, 0.1, 0.0], atol=1e-6)

    # with extra pairs outside the face region: those lie on the other faces, and the part
    # that does not move (z < 0) maps every point to itself
    pairs = sample_deformation_supervision(mesh.vertices, posed, mesh.faces, mask, 500, np.random.default_rng(6),
                                           sigmas=(0.0, 0.0), n_non_face_per_direction=300)
    assert pairs.shape == (2 * 2 * 800, 6)
    outside = np.setdiff1d(np.arange(len(mesh.faces)), faces_within_mask(mesh.faces, mask))
    rest = trimesh.Trimesh(mesh.vertices, mesh.faces[outside], process=False)
    d_face = _closest_distance(region, pairs[:, :3].astype(np.float64))
    d_rest = _closest_distance(rest, pairs[:, :3].astype(np.float64))
    assert np.all(np.minimum(d_face, d_rest) < 1e-6)
    assert abs(np.mean(d_face > 1e-6) - 600 / 1600) < 0.05  # the extra 2 x 2 x 300 rows, off the face region
    back = pairs[:, 2] < -0.1  # on faces whose vertices all stay
    assert back.sum() > 100 and np.allclose(pairs[back, 3:], pairs[back, :3], atol=1e-6)


# ----------------------------------------------------------------------------- storage
def _rows(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 6)).astype(np.float32)


def test_compact_identity_round_trip(tmp_path):
    face, non_face = _rows(100, 1), _rows(30, 2)
    storage.write_identity(tmp_path, 7, 3, face, non_face)
    assert storage.identity_done(tmp_path, 7, 3)
    assert sorted(p.name for p in (tmp_path / "007").iterdir()) == ["3_face.npy", "3_non_face.npy"]
    f, nf = open_identity(tmp_path, 7, 3)
    assert len(f) == 100 and len(nf) == 30
    assert np.array_equal(f.take(np.array([5, 0, 99])), face[[5, 0, 99]])


def test_release_chunked_files_read_as_one_array(tmp_path):
    face, non_face, corr = _rows(100, 1), _rows(40, 2), _rows(90, 3)
    folder = tmp_path / "id" / "012"
    folder.mkdir(parents=True)
    for i, (a, b) in enumerate(zip(np.array_split(face, 4), np.array_split(non_face, 4))):
        np.save(folder / f"5_{i}_face.npy", a)
        np.save(folder / f"5_{i}_non_face.npy", b)
    f, nf = open_identity(tmp_path / "id", 12, 5)
    assert len(f) == 100 and len(nf) == 40
    idx = np.random.default_rng(0).integers(0, 100, 500)
    assert np.array_equal(f.take(idx), face[idx])
    assert np.array_equal(nf.take(np.arange(40)), non_face)
    dfolder = tmp_path / "def" / "012" / "005"
    dfolder.mkdir(parents=True)
    for i, a in enumerate(np.array_split(corr, 3)):
        np.save(dfolder / f"corresp_{i}.npy", a)
    rows = open_deformation(tmp_path / "def", 12, 5)
    assert np.array_equal(rows.take(np.arange(90)[::-1]), corr[::-1])
    # a missing chunk is an error naming the folder
    os.remove(dfolder / "corresp_1.npy")
    with pytest.raises(SupervisionError, match="missing chunk"):
        open_deformation(tmp_path / "def", 12, 5)


def test_broken_supervision_files_are_named(tmp_path):
    with pytest.raises(SupervisionError, match=r"007.*3_face\.npy"):
        open_identity(tmp_path, 7, 3)
    storage.write_identity(tmp_path, 7, 3, _rows(50), _rows(10))
    face_path = tmp_path / "007" / "3_face.npy"
    data = face_path.read_bytes()
    face_path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(SupervisionError, match=str(face_path)):
        open_identity(tmp_path, 7, 3)
    np.save(face_path, np.zeros((10, 3), dtype=np.float32))  # wrong shape
    with pytest.raises(SupervisionError, match=r"3_face\.npy.*\(N, 6\)"):
        open_identity(tmp_path, 7, 3)
    bad = _rows(10)
    bad[4, 2] = np.nan
    np.save(face_path, bad)
    f, _ = open_identity(tmp_path, 7, 3)
    assert np.array_equal(f.take([0, 1]), bad[[0, 1]])
    with pytest.raises(SupervisionError, match=r"3_face\.npy: non-finite"):
        f.take(np.arange(10))
    (tmp_path / "007" / "3_non_face.npy").unlink()
    with pytest.raises(SupervisionError, match=r"3_non_face\.npy"):
        open_identity(tmp_path, 7, 3)


# ----------------------------------------------------------------------------- on the synthetic data
def test_identity_supervision_of_a_synthetic_subject(tiny):
    manager = DataManager(tiny["data"])
    subject = manager.subjects("train")[0]
    expression = manager.neutral_expression(subject)
    face, non_face = open_identity(tiny["identity"], subject, expression)
    face_rows, non_rows = face.take(np.arange(len(face))), non_face.take(np.arange(len(non_face)))
    scan = manager.load_scan(subject, expression)
    rng = np.random.default_rng(0)
    for rows in (face_rows, non_rows):
        pick = rows[rng.integers(0, len(rows), 2000)].astype(np.float64)
        # on the scan (float32 storage), above the neck, unit normals agreeing with the scan's
        assert _closest_distance(scan, pick[:, :3]).max() < 1e-5
        assert manager.neck_keep_mask(pick[:, :3], subject, expression).all()
        assert np.allclose(np.linalg.norm(pick[:, 3:], axis=1), 1.0, atol=1e-5)
        _, tri, _ = _closest(scan, pick[:, :3])
        assert np.median(np.sum(scan.face_normals[tri] * pick[:, 3:], axis=1)) > 0.95
    # face label: within 0.2 of the registration's face region
    reg = manager.load_registration(subject, expression)
    tree = cKDTree(reg.vertices[manager.face_mask_registration])
    assert tree.query(face_rows[:, :3])[0].max() < 0.2
    assert tree.query(non_rows[:, :3])[0].min() >= 0.2 - 1e-6
    assert len(non_rows) == 6_000


def test_correspondences_map_registration_to_registration(tiny):
    manager = DataManager(tiny["data"])
    subject = manager.subjects("train")[0]
    neutral = manager.neutral_expression(subject)
    posed_e = [e for e in manager.expressions(subject) if e != neutral][0]
    reg_n, reg_p = manager.load_registration(subject, neutral), manager.load_registration(subject, posed_e)
    mask = manager.face_mask_registration
    pairs = sample_deformation_supervision(reg_n.vertices, reg_p.vertices, reg_n.faces, mask, 1000,
                                           np.random.default_rng(0), sigmas=(0.0,)).astype(np.float64)
    # independent check: locate every neutral point on the neutral registration (face + barycentric
    # coordinates), apply the same coordinates to the posed registration
    region = faces_within_mask(reg_n.faces, mask)
    sub_n = trimesh.Trimesh(reg_n.vertices, reg_n.faces[region], process=False)
    dist, tri, bary = _closest(sub_n, pairs[:, :3])
    assert dist.max() < 1e-5
    expected = np.einsum("nk,nkc->nc", bary, reg_p.vertices[reg_n.faces[region][tri]])
    # in the posed -> neutral half the float32 neutral point may sit on a neighbouring face
    err = np.linalg.norm(expected - pairs[:, 3:], axis=1)
    assert np.median(err) < 1e-5 and np.mean(err < 1e-4) > 0.97
    # the stored supervision: both sigmas, both directions, float32, mostly near the registrations
    stored = open_deformation(tiny["deformation"], subject, posed_e)
    rows = stored.take(np.arange(len(stored))).astype(np.float64)
    assert rows.shape == (4 * 1500, 6)
    d_n = _closest_distance(reg_n, rows[:500, :3])
    d_p = _closest_distance(reg_p, rows[:500, 3:])
    assert np.quantile(d_n, 0.99) < 0.05 and np.quantile(d_p, 0.99) < 0.05
    assert np.median(np.abs(d_n - d_p)) < 2e-3  # the same normal offset on both sides


def test_scripts_skip_finished_and_report_failures(tiny, tmp_path, capsys):
    surface = _load_script("sample_surface")
    deform = _load_script("sample_deformation_field")
    manager = DataManager(tiny["data"])
    subject = manager.subjects("train")[0]
    out_id, out_def = tmp_path / "id", tmp_path / "def"
    args = ["--data_dir", str(tiny["data"]), "--subjects", str(subject), "999"]
    assert surface.main(args + ["--out_dir", str(out_id), "--n_samples", "20000", "--n_non_face", "500"]) == 3
    text = capsys.readouterr().out
    assert "MISSING subject 999" in text and "1 sampled" in text
    path = storage.identity_paths(out_id, subject, manager.neutral_expression(subject))[0]
    mtime = path.stat().st_mtime_ns
    assert surface.main(args[:3] + [str(subject), "--out_dir", str(out_id)]) == 0
    assert "1 already done" in capsys.readouterr().out and path.stat().st_mtime_ns == mtime

    assert deform.main(args[:3] + [str(subject), "--out_dir", str(out_def), "--n_per_direction", "200"]) == 0
    assert f"{len(manager.expressions(subject))} sampled" in capsys.readouterr().out
    assert open_deformation(out_def, subject, 2).take(np.arange(800)).shape == (800, 6)
    assert deform.main(args[:3] + [str(subject), "--out_dir", str(out_def)]) == 0
    assert "already done" in capsys.readouterr().out
