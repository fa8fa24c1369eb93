"""Tests of the synthetic head dataset generator (nphm.data.synthetic)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import point_cloud_utils as pcu
import pytest
import trimesh

from nphm.data.synthetic import (
    EXPRESSION_TYPES,
    ExpressionParams,
    IdentityParams,
    SyntheticSubject,
    apply_expression,
    generate_dataset,
    get_metadata,
    get_template,
    identity_warp,
    sample_expression,
    split_subjects,
)
from nphm.data.synthetic.subject import rng_for
from nphm.data.synthetic.template import cast_last_exit
from nphm.data.synthetic.writer import SCAN_FILES, scan_dir, write_scan

N_SUBJECTS, N_EXPRESSIONS, SEED = 3, 3, 7
MIRROR = np.array([-1.0, 1.0, 1.0])


def _load(path: Path) -> trimesh.Trimesh:
    return trimesh.load(str(path), process=False, force="mesh")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    report = generate_dataset(out, n_subjects=N_SUBJECTS, n_expressions=N_EXPRESSIONS, seed=SEED,
                              workers=1, progress=False)
    assert not report.failures, report.failures
    assert report.written == N_SUBJECTS * N_EXPRESSIONS
    return out


@pytest.fixture(scope="module")
def description(dataset):
    return json.loads((dataset / "dataset.json").read_text())


@pytest.fixture(scope="module")
def meshes(dataset):
    """{(subject, expression): {"registration"|"flame"|"scan": Trimesh}}"""
    return {(s, e): {k: _load(scan_dir(dataset, s, e) / f"{k}.ply") for k in ("registration", "flame", "scan")}
            for s in range(N_SUBJECTS) for e in range(N_EXPRESSIONS)}


def _face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = vertices[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def _throat_plane(flame_vertices: np.ndarray, indices) -> tuple:
    v1, v2, v3 = (flame_vertices[i].astype(np.float64) for i in indices)
    return v1, np.cross(v2 - v1, v3 - v1)


# ----------------------------------------------------------------------------- layout
def test_every_file_exists_and_loads(dataset, meshes):
    for s in range(N_SUBJECTS):
        for e in range(N_EXPRESSIONS):
            folder = scan_dir(dataset, s, e)
            assert folder == dataset / f"{s:03d}" / f"{e:03d}"
            for name in SCAN_FILES:
                assert (folder / name).is_file(), folder / name
            assert np.load(folder / "s.npy").shape == ()
            assert np.load(folder / "R.npy").shape == (3, 3)
            assert np.load(folder / "t.npy").shape == (3,)
    ref = meshes[(0, 0)]
    for key, m in meshes.items():
        assert np.array_equal(m["registration"].faces, ref["registration"].faces), key
        assert len(m["registration"].vertices) == len(ref["registration"].vertices)
        assert np.array_equal(m["flame"].faces, ref["flame"].faces), key
        # the scan is a separate, finer sampling, not the registration topology
        assert len(m["scan"].vertices) > 1.5 * len(m["registration"].vertices)
        assert len(m["flame"].vertices) < 0.3 * len(m["registration"].vertices)
        assert np.isfinite(m["scan"].vertices).all()


def test_description_and_assets(dataset, description):
    subjects = list(range(N_SUBJECTS))
    train, eval_, test = description["subjects_train"], description["subjects_eval"], description["subjects_test"]
    assert sorted(train + eval_ + test) == subjects
    assert len(set(train) | set(eval_) | set(test)) == N_SUBJECTS
    assert description["neutral_open"] == {str(s): 1 for s in subjects}
    assert description["neutral_closed"] == {str(s): 0 for s in subjects}
    assert len(description["anchor_vertex_indices_registration"]) == 39
    assert len(description["landmark_vertex_indices_registration_68"]) == 68
    assert len(description["throat_plane_flame_vertex_indices"]) == 3
    assert description["synthetic"]["expression_types"] == list(EXPRESSION_TYPES[:N_EXPRESSIONS])
    assets = dataset / description["assets_dir"]
    for name in description["assets"].values():
        assert (assets / name).is_file(), name
    n_reg = len(_load(scan_dir(dataset, 0, 0) / "registration.ply").vertices)
    n_flame = len(_load(scan_dir(dataset, 0, 0) / "flame.ply").vertices)
    face = np.load(assets / description["assets"]["face_mask_registration"])
    assert face.dtype == bool and face.shape == (n_reg,) and 0.1 < face.mean() < 0.6
    face_flame = np.load(assets / description["assets"]["face_region_flame"])
    assert face_flame.dtype == bool and face_flame.shape == (n_flame,)
    assert len(_load(assets / description["assets"]["template"]).vertices) == n_flame
    assert np.array_equal(np.load(assets / "lm_inds_39.npy"), description["anchor_vertex_indices_registration"])


def test_description_is_accepted_by_the_data_package(dataset):
    description_mod = pytest.importorskip("nphm.data.description")
    d = description_mod.DatasetDescription.load(dataset / "dataset.json")
    assert d.asset_path("anchors_mean").is_file()
    assert d.neutral(0, "open") == 1


# ----------------------------------------------------------------------------- anchors
def test_anchors_mean_and_symmetry(dataset, description, meshes):
    idx = np.asarray(description["anchor_vertex_indices_registration"])
    reg = meshes[(0, 1)]["registration"]
    assert idx.min() >= 0 and idx.max() < len(reg.vertices)
    # independent recomputation of the asset: mean over training subjects' neutral-open scans
    train = description["subjects_train"]
    expected = np.mean([meshes[(s, 1)]["registration"].vertices[idx] for s in train], axis=0)
    anchors = np.load(dataset / "assets" / "anchors_39.npy")
    assert anchors.shape == (39, 3)
    np.testing.assert_allclose(anchors, expected, atol=1e-6)
    # pairs (right = -x first, as in the release; then left) are mirror images, the last 7 lie on the symmetry plane
    right, left = anchors[0:32:2], anchors[1:32:2]
    assert (left[:, 0] > 0.02).all()
    np.testing.assert_allclose(right, left * MIRROR, atol=1e-4)
    assert np.abs(anchors[32:, 0]).max() < 1e-4
    # anchors spread over the head, not collapsed
    assert np.linalg.norm(anchors[:, None] - anchors[None], axis=-1)[np.triu_indices(39, 1)].min() > 0.02
    # pair 15 (anchors 30, 31) sits on the back of the head
    assert (anchors[30:32, 2] < -0.2).all() and (anchors[32:, 2] > 0.1).all()


def test_landmarks_are_mirror_consistent(description, meshes):
    lm = np.asarray(description["landmark_vertex_indices_registration_68"])
    v = meshes[(0, 0)]["registration"].vertices[lm].astype(np.float64)
    # iBUG pairs: jaw 0<->16, eyes 36<->45, mouth corners 48<->54; nose tip 30 on the midline
    for a, b in ((0, 16), (3, 13), (17, 26), (36, 45), (39, 42), (48, 54), (31, 35)):
        np.testing.assert_allclose(v[a], v[b] * MIRROR, atol=1e-5)
        assert v[b, 0] > 0  # the second of each pair is the subject's left (+x)
    assert abs(v[30, 0]) < 1e-6 and v[30, 2] == v[:, 2].max()  # nose tip is the most forward
    assert v[8, 1] == v[:, 1].min()  # chin is the lowest


# ----------------------------------------------------------------------------- expressions
def test_expressions_flip_no_triangle_and_keep_the_back_still(dataset, meshes):
    meta = get_metadata()
    back = meta.back_of_head_registration
    assert back.sum() > 1000
    for s in range(N_SUBJECTS):
        neutral = meshes[(s, 0)]["registration"]
        n0 = _face_normals(neutral.vertices.astype(np.float64), neutral.faces)
        for e in range(1, N_EXPRESSIONS):
            posed = meshes[(s, e)]["registration"]
            n1 = _face_normals(posed.vertices.astype(np.float64), posed.faces)
            assert np.einsum("ij,ij->i", n0, n1).min() > 0.0, (s, e)
            assert np.abs(posed.vertices[back] - neutral.vertices[back]).max() == 0.0


@pytest.mark.parametrize("subject", [11, 23])
def test_all_expression_types_are_bijective(subject):
    """Every expression type (and random mixtures) on other identities: no face flips, the
    face turns by less than 90 degrees, and displacements stay moderate."""
    t = get_template()
    grid, basis = t.grids["registration"], t.basis["registration"]
    subj = SyntheticSubject(subject, SEED)
    neutral = subj.neutral_vertices("registration")
    n0 = _face_normals(neutral, grid.faces)
    moved = np.zeros(len(neutral))
    for e in range(len(EXPRESSION_TYPES) + 4):
        posed = apply_expression(neutral, basis, subj.expression_params(e), subj.identity)
        cos = np.einsum("ij,ij->i", n0, _face_normals(posed, grid.faces))
        assert cos.min() > 0.2, (subject, e, EXPRESSION_TYPES[e] if e < len(EXPRESSION_TYPES) else "random")
        disp = np.linalg.norm(posed - neutral, axis=1)
        assert disp.max() < 0.2
        moved = np.maximum(moved, disp)
    # the face moves, the back of the head never does
    meta = get_metadata()
    assert moved[meta.face_mask_registration].max() > 0.05
    assert moved[meta.back_of_head_registration].max() == 0.0


def test_jaw_opening_reveals_a_mouth_cavity(meshes):
    meta = get_metadata()
    up, lo = meta.upper_lip_inner, meta.lower_lip_inner
    for s in range(N_SUBJECTS):
        gaps = [np.linalg.norm(meshes[(s, e)]["registration"].vertices[up] - meshes[(s, e)]["registration"].vertices[lo])
                for e in range(3)]
        closed, neutral_open, jaw_open = gaps
        assert closed < 0.004          # lips touch (< 1 mm)
        assert neutral_open > closed + 0.004
        assert jaw_open > closed + 0.05   # > 12 mm
        # a ray into the open mouth travels well behind the lips before it hits the surface
        reg = meshes[(s, 2)]["registration"]
        v = reg.vertices.astype(np.float64)
        mid = 0.5 * (v[up] + v[lo])
        # a few rays along the mouth line (several rays: pcu mishandles a single ray)
        origins = np.stack([np.linspace(-0.03, 0.03, 5), np.full(5, mid[1]), np.ones(5)], axis=1)
        directions = np.tile([0.0, 0.0, -1.0], (5, 1))
        fid, _, t = pcu.ray_mesh_intersection(v.astype(np.float32), reg.faces.astype(np.int32),
                                              origins.astype(np.float32), directions.astype(np.float32))
        assert (fid >= 0).all()
        assert (1.0 - t < mid[2] - 0.03).all(), 1.0 - t


def test_expression_sampling_is_typed_and_reproducible():
    rng_a, rng_b = rng_for(1, 2, 1, 5), rng_for(1, 2, 1, 5)
    assert sample_expression(rng_a, 5) == sample_expression(rng_b, 5)
    assert sample_expression(rng_for(0, 0, 1, 0), 0) == ExpressionParams()
    assert 0.0 < sample_expression(rng_for(0, 0, 1, 1), 1).jaw < 0.1
    assert sample_expression(rng_for(0, 0, 1, 2), 2).jaw > 0.2


# ----------------------------------------------------------------------------- scans
def test_scan_matches_registration_surface(meshes):
    for s in range(N_SUBJECTS):
        for e in range(N_EXPRESSIONS):
            reg, scan = meshes[(s, e)]["registration"], meshes[(s, e)]["scan"]
            rv, rf = reg.vertices.astype(np.float64), reg.faces.astype(np.int64)
            d, _, _ = pcu.closest_points_on_mesh(scan.vertices.astype(np.float64), rv, rf)
            assert d.mean() < 0.0015 and np.quantile(d, 0.99) < 0.005, (s, e, d.mean())
            # and the scan covers the registration above its neck cut
            upper = rv[rv[:, 1] > -0.45]
            d2, _, _ = pcu.closest_points_on_mesh(upper, scan.vertices.astype(np.float64),
                                                  scan.faces.astype(np.int64))
            assert np.quantile(d2, 0.99) < 0.005


def test_scan_is_open_at_the_neck_below_the_throat_plane(description, meshes):
    throat = description["throat_plane_flame_vertex_indices"]
    for s in range(N_SUBJECTS):
        for e in range(N_EXPRESSIONS):
            m = meshes[(s, e)]
            edges = m["scan"].edges_sorted
            boundary = trimesh.grouping.group_rows(edges, require_count=1)
            boundary_vertices = np.unique(edges[boundary])
            assert len(boundary_vertices) > 50
            bv = m["scan"].vertices[boundary_vertices].astype(np.float64)
            assert bv[:, 1].max() < -0.5
            origin, normal = _throat_plane(m["flame"].vertices, throat)
            assert normal[1] > 0
            assert ((bv - origin) @ normal < 0).all()  # the cut boundary is removed by the neck cut
            reg = m["registration"].vertices.astype(np.float64)
            head = reg[reg[:, 1] > -0.35]
            assert ((head - origin) @ normal > 0).all()  # the head is kept
            assert (reg[:, 1].min() < -0.6)  # the registration has a neck below the plane


def test_similarity_to_millimetres(dataset, meshes):
    for s in range(N_SUBJECTS):
        for e in range(N_EXPRESSIONS):
            folder = scan_dir(dataset, s, e)
            scale, rot, t = (np.load(folder / n) for n in ("s.npy", "R.npy", "t.npy"))
            np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
            assert abs(np.linalg.det(rot) - 1.0) < 1e-12
            assert 0.0037 < float(scale) < 0.0043
            x = meshes[(s, e)]["scan"].vertices.astype(np.float64)
            raw = (x - t) @ rot / scale
            np.testing.assert_allclose(scale * raw @ rot.T + t, x, atol=1e-9)
            # widest horizontal extent of the head (incl. ears) in mm, rotation-invariant
            head = raw[(x[:, 1] > -0.3)]
            centred = head - head.mean(axis=0)
            widths = np.ptp(centred @ rot.T, axis=0)  # back in nphm-aligned axes, still in mm
            assert 140 < widths[0] < 260, widths
            assert 180 < widths[2] < 280, widths


def test_heads_fit_the_release_bounding_boxes(meshes):
    for m in meshes.values():
        v = m["registration"].vertices.astype(np.float64)
        chin = v[get_metadata().landmark_indices_68[8], 1]
        width, top = np.ptp(v[:, 0]), v[:, 1].max()
        assert 0.6 < width < 0.8 and 0.8 < top - chin < 1.05
        head = v[v[:, 1] > -0.5]  # the fitting grid stops at y = -0.5
        assert (head.min(axis=0) > np.array([-0.55, -0.5, -0.95])).all()
        assert (head.max(axis=0) < np.array([0.55, 0.75, 0.4])).all()
        preview = v[v[:, 1] > -0.6]
        assert (preview.min(axis=0) > np.array([-0.4, -0.6, -0.7])).all()
        assert (preview.max(axis=0) < np.array([0.4, 0.6, 0.5])).all()


# ----------------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_different_seed_different_heads(dataset, tmp_path):
    subject = SyntheticSubject(1, SEED)
    write_scan(tmp_path, subject, 2)
    for name in SCAN_FILES:
        assert (tmp_path / name).read_bytes() == (scan_dir(dataset, 1, 2) / name).read_bytes(), name
    other = SyntheticSubject(1, SEED + 1).neutral_vertices("registration")
    assert np.abs(other - subject.neutral_vertices("registration")).max() > 1e-3
    assert SyntheticSubject(1, SEED + 1).identity != subject.identity


def test_rerun_skips_finished_scans_and_refuses_another_seed(dataset):
    before = (scan_dir(dataset, 0, 0) / "scan.ply").stat().st_mtime_ns
    report = generate_dataset(dataset, n_subjects=N_SUBJECTS, n_expressions=N_EXPRESSIONS, seed=SEED, progress=False)
    assert report.written == 0 and report.skipped == N_SUBJECTS * N_EXPRESSIONS
    assert (scan_dir(dataset, 0, 0) / "scan.ply").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="seed"):
        generate_dataset(dataset, n_subjects=1, n_expressions=2, seed=SEED + 1, progress=False)


# ----------------------------------------------------------------------------- building blocks
def test_ray_marching_finds_an_analytic_sphere():
    rng = np.random.default_rng(0)
    dirs = rng.standard_normal((500, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    origins = rng.uniform(-0.05, 0.05, size=(500, 3))
    r = cast_last_exit(origins, dirs, lambda p: np.linalg.norm(p, axis=1) - 0.3)
    # exact exit distance from a point inside a sphere
    b = np.einsum("ij,ij->i", origins, dirs)
    exact = -b + np.sqrt(b * b - (np.einsum("ij,ij->i", origins, origins) - 0.09))
    np.testing.assert_allclose(r, exact, atol=1e-4)


def test_identity_warp_is_monotone_in_height():
    p = IdentityParams(lower_face=1.12, jaw_width=0.9, scale=1.05, height=0.95)
    y = np.linspace(-0.8, 0.6, 2001)
    pts = np.stack([np.full_like(y, 0.1), y, np.full_like(y, 0.2)], axis=1)
    out = identity_warp(pts, p)
    assert (np.diff(out[:, 1]) > 0).all()
    assert (out[:, 0] > 0).all()


def test_template_is_symmetric_and_outward():
    t = get_template()
    for name, grid in t.grids.items():
        rest = t.rest[name]
        if (grid.mirror >= 0).all():
            np.testing.assert_allclose(rest[grid.mirror], rest * MIRROR, atol=1e-9)
        # outward orientation: the enclosed volume (closing the neck with the origin) is positive
        mesh = trimesh.Trimesh(rest, grid.faces, process=False)
        assert mesh.volume > 0.1, name


@pytest.mark.parametrize("n", [1, 2, 3, 10, 50])
def test_split_subjects(n):
    train, eval_, test = split_subjects(range(n))
    assert sorted(train + eval_ + test) == list(range(n))
    assert len(train) >= 1
    if n >= 10:
        assert abs(len(test) - 0.2 * n) <= 1 and abs(len(eval_) - 0.1 * n) <= 1
