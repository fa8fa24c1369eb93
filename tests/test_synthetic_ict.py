"""Tests of the realistic synthetic heads (nphm.data.synthetic.ict, ``source="ict"``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import point_cloud_utils as pcu
import pytest
import trimesh

from nphm.data import DataManager
from nphm.data.heads import load_ict_model, load_release_anchors
from nphm.data.synthetic import EXPRESSION_TYPES, generate_dataset, get_source
from nphm.data.synthetic.ict import (ICT_GENERATOR_VERSION, IctSubject, get_ict_metadata, get_topology,
                                     sample_expression, sample_hair_style)
from nphm.data.synthetic.ict.subdivision import loop_subdivision
from nphm.data.synthetic.writer import SCAN_FILES, scan_dir

N_SUBJECTS, N_EXPRESSIONS, SEED = 2, 3, 3  # expressions: neutral closed, neutral open, jaw open
MM = 250.0


def _load(path: Path) -> trimesh.Trimesh:
    return trimesh.load(str(path), process=False, force="mesh")


def _files(root: Path):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ict")
    report = generate_dataset(out, n_subjects=N_SUBJECTS, n_expressions=N_EXPRESSIONS, seed=SEED, workers=1,
                              progress=False, source="ict")
    assert not report.failures, report.failures
    assert report.written == N_SUBJECTS * N_EXPRESSIONS
    return out


@pytest.fixture(scope="module")
def subjects():
    return {s: IctSubject(s, SEED) for s in range(N_SUBJECTS)}


@pytest.fixture(scope="module")
def model():
    return load_ict_model()


# ----------------------------------------------------------------------------- layout, determinism
def test_layout_and_description(dataset):
    for s in range(N_SUBJECTS):
        for e in range(N_EXPRESSIONS):
            for name in SCAN_FILES:
                assert (scan_dir(dataset, s, e) / name).is_file()
    d = json.loads((dataset / "dataset.json").read_text())
    assert d["synthetic"]["source"] == "ict"
    assert d["synthetic"]["generator_version"] == ICT_GENERATOR_VERSION
    assert d["synthetic"]["expression_types"] == list(EXPRESSION_TYPES[:N_EXPRESSIONS])
    marker = json.loads((dataset / "synthetic.json").read_text())
    assert marker == {"seed": SEED, "generator_version": ICT_GENERATOR_VERSION, "source": "ict"}
    for name in d["assets"].values():
        assert (dataset / "assets" / name).is_file(), name
    meta = get_ict_metadata()
    assert np.array_equal(np.load(dataset / "assets" / "lm_inds_39.npy"), load_ict_model().anchors39)
    assert np.load(dataset / "assets" / "face.npy").shape == (get_topology().n_registration,)
    assert meta.face_region_flame.shape == (get_topology().n_flame,)


def test_deterministic_and_worker_independent(dataset, tmp_path):
    """Two workers give the same bytes as one; one subject alone gives the same scan files."""
    other = tmp_path / "two_workers"
    generate_dataset(other, n_subjects=N_SUBJECTS, n_expressions=N_EXPRESSIONS, seed=SEED, workers=2,
                     progress=False, source="ict")
    assert _files(other) == _files(dataset)
    for rel in _files(dataset):
        assert (other / rel).read_bytes() == (dataset / rel).read_bytes(), rel
    single = tmp_path / "single"
    generate_dataset(single, n_subjects=1, n_expressions=N_EXPRESSIONS, seed=SEED, first_subject=1,
                     progress=False, source="ict")
    for e in range(N_EXPRESSIONS):
        for name in SCAN_FILES:
            assert (scan_dir(single, 1, e) / name).read_bytes() == (scan_dir(dataset, 1, e) / name).read_bytes()


def test_sources_do_not_mix(dataset):
    with pytest.raises(ValueError, match="procedural"):
        generate_dataset(dataset, n_subjects=1, n_expressions=2, seed=SEED, progress=False)  # default: procedural
    assert get_source().name == "procedural"


# ----------------------------------------------------------------------------- registration, FLAME-like
def test_registration_topology_and_exact_correspondence(dataset, subjects, model):
    topo = get_topology()
    regs = {(s, e): _load(scan_dir(dataset, s, e) / "registration.ply")
            for s in range(N_SUBJECTS) for e in range(N_EXPRESSIONS)}
    for mesh in regs.values():
        assert np.array_equal(mesh.faces, topo.registration_faces)
    for s, subject in subjects.items():
        weights = subject.expression(2).weights
        assert list(weights) == ["jawOpen"]
        shape = model.expression_shapes[model.expression_names.index("jawOpen")][topo.registration_vertices]
        moved = regs[(s, 2)].vertices - regs[(s, 0)].vertices
        acts = np.abs(shape).max(axis=1) > 0
        assert np.all(moved[~acts] == 0.0)  # exactly still where the shape does not act
        np.testing.assert_allclose(moved, weights["jawOpen"] * shape, atol=2e-6)
    # the anchors of the registration are the model's anchor vertices (skin keeps the model numbering)
    reg = subjects[0].registration(1)
    np.testing.assert_array_equal(reg.vertices[model.anchors39], subjects[0].union_vertices(1)[model.anchors39])


def test_flame_like_mesh(dataset, subjects, model):
    topo = get_topology()
    assert 4000 < topo.n_flame < 6500
    flame = _load(scan_dir(dataset, 0, 1) / "flame.ply")
    assert np.array_equal(flame.faces, topo.flame_faces)
    union = subjects[0].union_vertices(1)
    np.testing.assert_allclose(flame.vertices[topo.flame_throat], union[model.throat_plane_vertices], atol=1e-6)
    assert 0.15 < topo.flame_face_region.mean() < 0.5


# ----------------------------------------------------------------------------- scans
def _closest(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray):
    d, fid, _ = pcu.closest_points_on_mesh(np.ascontiguousarray(points, dtype=np.float64),
                                           np.ascontiguousarray(vertices, dtype=np.float64),
                                           np.ascontiguousarray(faces, dtype=np.int32))
    return np.asarray(d), np.asarray(fid)


@pytest.mark.parametrize("expression", [0, 2])
def test_scan_lies_on_skin_hair_eyes_and_mouth(dataset, subjects, model, expression):
    topo = get_topology()
    for s, subject in subjects.items():
        scan = _load(scan_dir(dataset, s, expression) / "scan.ply")
        assert len(scan.vertices) > 1.5 * topo.n_registration  # finer than the registration
        union = subject.union_vertices(expression)
        d, fid = _closest(scan.vertices, union, topo.union_faces)
        assert np.median(d) * MM < 0.4 and np.percentile(d, 99) * MM < 1.0, (s, expression)
        # on the hair surface where there is hair: far from the bare skin by about the thickness
        thickness = np.zeros(model.n_vertices)
        thickness[topo.skin] = subject.hair_thickness()
        face_t = thickness[topo.union_faces[fid]].mean(axis=1)
        haired = face_t > 0.02  # > 5 mm
        if haired.sum() > 100:
            bare = union.copy()
            bare[topo.skin] -= subject.hair_offsets()  # the same head without hair
            d_bare, _ = _closest(scan.vertices[haired], bare, topo.union_faces)
            assert np.median(d_bare / face_t[haired]) > 0.6
        # eyeballs close the eyes; the teeth show when the jaw is open
        labels = model.region_labels[topo.union_faces[fid, 0]]
        names = model.region_names
        on_eyes = np.isin(labels, [names.index("eyeball_left"), names.index("eyeball_right")]).sum()
        on_teeth = (labels == names.index("teeth")).sum()
        assert on_eyes > 200, on_eyes
        if expression == 2:
            assert on_teeth > 100, on_teeth
        else:
            assert on_teeth < 50, on_teeth


def test_neck_cut_and_data_manager(dataset):
    manager = DataManager(dataset)
    assert manager.subjects("all") == list(range(N_SUBJECTS))
    for s in range(N_SUBJECTS):
        for e in range(N_EXPRESSIONS):
            scan = manager.load_scan(s, e)
            origin, normal = manager.throat_plane(s, e)
            assert ((scan.vertices - origin) @ normal).min() > 0.0  # nothing below the throat plane
            assert manager.neck_keep_mask(scan.vertices, s, e).all()
    reg = manager.load_registration(0, 1)
    flame = manager.load_flame(0, 1)
    scale, rot, t = manager.transform(0, 1)
    assert 0.0038 < scale < 0.0042 and rot.shape == (3, 3) and t.shape == (3,)
    assert len(reg.vertices) == get_topology().n_registration and len(flame.vertices) == get_topology().n_flame
    assert manager.anchors(0, 1).shape == (39, 3)
    raw = manager.load_scan(0, 1, frame="raw")
    extent = raw.vertices.max(axis=0) - raw.vertices.min(axis=0)
    assert 150 < extent.max() < 400  # millimetres


# ----------------------------------------------------------------------------- hair, anchors, expressions
def test_hair_spans_short_to_voluminous_and_never_folds():
    topo = get_topology()
    tops = []
    for s in range(16):
        subject = IctSubject(s, 0)
        tops.append(subject.hair_thickness().max() * MM)
        skin = subject.neutral_vertices()[topo.skin]
        hair = skin + subject.hair_offsets()

        def normals(v):
            tri = v[topo.skin_faces]
            n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
            return n / np.linalg.norm(n, axis=1, keepdims=True)

        assert (np.einsum("fd,fd->f", normals(skin), normals(hair)) > 0.0).all(), s
    tops = np.array(tops)
    assert tops.min() < 4.0 and tops.max() > 30.0, tops
    kinds = {sample_hair_style(np.random.default_rng(k)).kind for k in range(60)}
    assert {"bald", "buzz", "short", "medium", "voluminous"} <= kinds


def test_mean_anchors_near_the_release(dataset):
    """The assets' mean anchors are the training registrations' mean; a population's mean is
    near the release's mean anchors (hair moves the crown anchors out)."""
    d = json.loads((dataset / "dataset.json").read_text())
    idx = np.load(dataset / "assets" / "lm_inds_39.npy")
    expected = np.mean([_load(scan_dir(dataset, s, 1) / "registration.ply").vertices[idx]
                        for s in d["subjects_train"]], axis=0)
    np.testing.assert_allclose(np.load(dataset / "assets" / "anchors_39.npy"), expected, atol=1e-6)
    release = load_release_anchors()
    anchors = np.mean([IctSubject(s, 0).registration(1).vertices[idx] for s in range(40)], axis=0)
    dist = np.linalg.norm(anchors - release, axis=1) * MM
    assert dist.mean() < 10.0 and dist.max() < 25.0, dist.round(1)


def test_expression_vocabulary(model):
    names = set(model.expression_names)
    expected = {"jaw_open": {"jawOpen"}, "smile": {"mouthSmile_L", "mouthSmile_R"}, "pucker": {"mouthPucker"},
                "brows_up": {"browInnerUp_L", "browOuterUp_R"}, "eyes_closed": {"eyeBlink_L", "eyeBlink_R"},
                "cheek_puff": {"cheekPuff_L", "cheekPuff_R"}, "frown": {"browDown_L", "mouthFrown_R"},
                "surprise": {"jawOpen", "eyeWide_L", "browInnerUp_R"}, "laugh": {"jawOpen", "mouthSmile_L"}}
    for index in range(30):
        kind = EXPRESSION_TYPES[index] if index < len(EXPRESSION_TYPES) else "random"
        for seed in range(3):
            e = sample_expression(np.random.default_rng(seed), index)
            assert e.kind == kind
            assert set(e.weights) <= names and all(0.0 < w <= 1.0 for w in e.weights.values())
            assert expected.get(kind, set()) <= set(e.weights), (kind, e.weights)
            if kind == "neutral_closed":
                assert not e.weights
            if kind == "neutral_open":
                assert list(e.weights) == ["jawOpen"] and e.weights["jawOpen"] < 0.2
            if kind == "wink":
                assert len([n for n in e.weights if n.startswith("eyeBlink")]) == 1
            if kind == "random":
                assert 3 <= len(e.weights) <= 10


def test_loop_subdivision_is_an_affine_refinement():
    # a flat square of two triangles stays flat; rows sum to one; each face becomes four
    v = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    f = np.array([[0, 1, 2], [0, 2, 3]])
    sub = loop_subdivision(f, 4)
    fine = sub.apply(v)
    assert fine.shape == (4 + 5, 3) and len(sub.faces) == 8
    np.testing.assert_allclose(np.asarray(sub.matrix.sum(axis=1)).ravel(), 1.0)
    np.testing.assert_allclose(fine[:, 2], 0.0)
    # a closed mesh shrinks a little towards its centre but keeps its orientation
    box = trimesh.creation.icosphere(subdivisions=1)
    sub = loop_subdivision(box.faces, len(box.vertices))
    fine = trimesh.Trimesh(sub.apply(box.vertices), sub.faces, process=False)
    assert fine.is_watertight and fine.volume > 0.9 * box.volume and fine.volume < box.volume
