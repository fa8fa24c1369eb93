"""DataManager on a miniature copy of the real release's layout and description."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import trimesh

from nphm.data import DataManager, DatasetDescription, DescriptionError, MeshLoadError, MissingNeutralError
from nphm.data import frames

REPO = Path(__file__).resolve().parents[1]
RELEASE_JSON = REPO / "dataset" / "nphm_release.json"
FACTS = json.loads(RELEASE_JSON.read_text())

N_REG = 3900  # > largest anchor/landmark index (3863)
N_FLAME = 5023
# Throat plane: v1 = (0, -0.5, 0), v2 = v1 + (0, 0, 2), v3 = v1 + (1, 0, 0)
# -> normal = cross((0, 0, 2), (1, 0, 0)) = (0, 2, 0) (not normalised), keep y > -0.5.
THROAT = {0: (0.0, -0.5, 0.0), 1: (0.0, -0.5, 2.0), 2: (1.0, -0.5, 0.0)}

# subject: (expressions on disk, expressions with full files)
LAYOUT = {
    17: ([0, 10, 11], [0, 10]),  # train, neutral open 10 / closed 0
    125: ([0, 1, 2, 3, 4, 5], [0]),  # train, no neutral-open, bad scans 1, 4, 5
    143: ([0, 1, 2, 3, 4, 5, 6], [2]),  # test, invalid 0, 1, 5
    199: ([0, 1], [1]),  # eval
    236: ([0, 3, 8], []),  # test, no neutral-open, invalid 8
}


def _random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def _write_mesh(path, vertices, faces):
    trimesh.Trimesh(vertices, faces, process=False).export(str(path))


def _random_mesh(rng, n):
    return rng.normal(size=(n, 3)), rng.integers(0, n, size=(2 * n, 3))


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("nphm_mini")
    data = root / "dataset"
    rng = np.random.default_rng(0)
    truth = {}
    for subject, (expressions, full) in LAYOUT.items():
        for e in expressions:
            d = data / f"{subject:03d}" / f"{e:03d}"
            d.mkdir(parents=True)
            if e not in full:
                continue
            sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
            scan_v = sphere.vertices + rng.normal(scale=0.01, size=sphere.vertices.shape)
            _write_mesh(d / "scan.ply", scan_v, sphere.faces)
            reg_v, reg_f = _random_mesh(rng, N_REG)
            _write_mesh(d / "registration.ply", reg_v, reg_f)
            flame_v, flame_f = _random_mesh(rng, N_FLAME)
            for k, idx in enumerate(FACTS["throat_plane_flame_vertex_indices"]):
                flame_v[idx] = THROAT[k]
            _write_mesh(d / "flame.ply", flame_v, flame_f)
            s = rng.uniform(0.003, 0.005)
            R = _random_rotation(rng)
            t = rng.normal(scale=0.1, size=3)
            np.save(d / "s.npy", np.array(s))
            np.save(d / "R.npy", R)
            np.save(d / "t.npy", t)
            truth[(subject, e)] = dict(scan=scan_v, reg=reg_v, flame=flame_v, s=s, R=R, t=t)
    (data / "not_a_subject").mkdir()
    (data / "017" / "tmp").mkdir()

    assets = root / "assets"
    assets.mkdir()
    template_v, template_f = _random_mesh(rng, N_FLAME)
    _write_mesh(assets / "template.ply", template_v, template_f)
    region_ids = np.array([5, 17, 400, 4999])
    # the region mesh lists a subset of template vertices, in another order
    _write_mesh(assets / "better_face_region.ply", template_v[region_ids[::-1]], np.array([[0, 1, 2], [1, 2, 3]]))
    face_mask = np.zeros(N_REG, dtype=bool)
    face_mask[100:200] = True
    np.save(assets / "face.npy", face_mask)
    np.save(assets / "anchors_39.npy", rng.normal(size=(39, 3)))

    desc = dataclasses.replace(DatasetDescription.load(RELEASE_JSON), assets_dir=str(assets))
    manager = DataManager(data, desc, root / "single_view")
    return dict(manager=manager, truth=truth, root=root, data=data, region_ids=region_ids, face_mask=face_mask)


# ---------------------------------------------------------------------- description file
def test_release_description_matches_facts():
    d = DatasetDescription.load(RELEASE_JSON)
    assert d.subjects_train is None
    assert len(d.subjects_test) == 23 and len(d.subjects_eval) == 10
    assert d.neutral(99) is None and d.neutral(17) == 10 and d.neutral(23, "closed") is None
    assert d.invalid_expressions_test[143] == [0, 1, 5]
    assert d.bad_scans[298] == [23, 24, 25, 26]
    assert d.throat_plane_flame_vertex_indices == [3276, 3207, 3310]
    assert d.assets["anchors_mean"] == "anchors_39.npy" and d.assets["face_mask_registration"] == "face.npy"
    # JSON round trip
    assert DatasetDescription.from_dict(json.loads(json.dumps(d.to_dict()))).to_dict() == d.to_dict()


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda d: d.pop("bad_scans"), "bad_scans"),
        (lambda d: d.__setitem__("subjects_eval", [199, "x"]), "subjects_eval[1]"),
        (lambda d: d.__setitem__("throat_plane_flame_vertex_indices", [1, 2]), "throat_plane_flame_vertex_indices"),
        (lambda d: d.__setitem__("anchor_vertex_indices_registration", [1] * 38), "anchor_vertex_indices_registration"),
        (lambda d: d["neutral_open"].__setitem__("17", -5), "neutral_open.17"),
        (lambda d: d["invalid_expressions_test"].__setitem__("17", [1]), "invalid_expressions_test"),
        (lambda d: d.__setitem__("subjects_eval", [99]), "subjects_eval"),
        (lambda d: d["assets"].pop("face_region_flame"), "assets"),
    ],
)
def test_description_errors_name_file_and_key(tmp_path, edit, key):
    data = json.loads(RELEASE_JSON.read_text())
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DescriptionError) as err:
        DatasetDescription.load(path)
    assert str(path) in str(err.value) and key in str(err.value)


def test_description_not_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{ not json")
    with pytest.raises(DescriptionError, match="broken.json"):
        DatasetDescription.load(path)


def test_local_description_and_assets_dir(tmp_path):
    data = json.loads(RELEASE_JSON.read_text())
    data.update(name="tiny", subjects_train=[1], subjects_eval=[], subjects_test=[], invalid_expressions_test={},
                assets_dir="assets")
    (tmp_path / "001" / "000").mkdir(parents=True)
    (tmp_path / "dataset.json").write_text(json.dumps(data))
    m = DataManager(tmp_path, single_view_dir=tmp_path / "sv")
    assert m.description.name == "tiny"
    assert m.asset_path("face_mask_registration") == tmp_path / "assets" / "face.npy"
    with pytest.warns(UserWarning, match="neutral"):
        assert m.subjects("train") == []  # subject 1 has no neutral in the release tables
    assert m.subjects("train", require_neutral=False) == [1]


# ---------------------------------------------------------------------- splits and expressions
def test_splits(mini):
    m = mini["manager"]
    assert m.subjects("all") == [17, 125, 143, 199, 236]
    with pytest.warns(UserWarning, match=r"\[125\]"):
        assert m.subjects("train") == [17]
    assert m.subjects("train", require_neutral=False) == [17, 125]
    with pytest.warns(UserWarning, match="not found"):
        assert m.subjects("eval") == [199]
    with pytest.warns(UserWarning, match="not found"):
        assert m.subjects("test") == [143, 236]  # test keeps subjects without a neutral
    with pytest.raises(ValueError, match="split"):
        m.subjects("validation")


def test_expressions_bad_and_invalid(mini):
    m = mini["manager"]
    assert m.expressions(17) == [0, 10, 11]  # "tmp" folder ignored
    assert m.expressions(125) == [0, 2, 3]
    assert m.expressions(125, exclude_bad=False) == [0, 1, 2, 3, 4, 5]
    assert m.test_expressions(143) == [2, 3, 4, 6]
    assert m.test_expressions(236) == [0, 3]
    assert m.test_expressions(17) == m.expressions(17)
    with pytest.raises(FileNotFoundError, match="999"):
        m.expressions(999)


def test_neutrals(mini):
    m = mini["manager"]
    assert m.neutral_expression(17) == 10
    assert m.neutral_expression(17, "closed") == 0
    assert m.neutral_expression(236, "closed") == 0
    with pytest.raises(MissingNeutralError, match="125"):
        m.neutral_expression(125)
    with pytest.raises(MissingNeutralError, match="236"):
        m.neutral_expression(236, "open")
    with pytest.raises(ValueError):
        m.neutral_expression(17, "smiling")


def test_paths(mini):
    m, data, root = mini["manager"], mini["data"], mini["root"]
    assert m.scan_path(17, 0) == data / "017" / "000" / "scan.ply"
    assert m.registration_path(143, 2) == data / "143" / "002" / "registration.ply"
    assert m.flame_path(199, 1) == data / "199" / "001" / "flame.ply"
    assert m.observation_path(143, 2) == root / "single_view" / "143" / "2" / "obs.npy"
    assert m.observation_path(17, 10, back=True, full=True) == root / "single_view" / "017" / "10" / "full_obs_back.npy"


# ---------------------------------------------------------------------- geometry
def test_transform_round_trip_against_hand_computation(mini):
    m, truth = mini["manager"], mini["truth"]
    s, R, t = m.transform(17, 10)
    tr = truth[(17, 10)]
    assert s == pytest.approx(tr["s"]) and np.allclose(R, tr["R"]) and np.allclose(t, tr["t"])
    x = np.random.default_rng(1).normal(size=(7, 3))
    raw_hand = np.array([[sum((p[j] - t[j]) * R[j, i] for j in range(3)) / s for i in range(3)] for p in x])
    raw = frames.nphm_to_raw(x, s, R, t)
    np.testing.assert_allclose(raw, raw_hand, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(frames.raw_to_nphm(raw, s, R, t), x, atol=1e-12)
    np.testing.assert_allclose(frames.flame_to_nphm(frames.nphm_to_flame(x)), x)
    np.testing.assert_allclose(frames.nphm_to_flame(x), x / 4)
    # loaded meshes in each frame
    scan = m.load_scan(17, 10, frame="raw")
    np.testing.assert_allclose(scan.vertices, frames.nphm_to_raw(tr["scan"], s, R, t), atol=1e-3)
    np.testing.assert_allclose(m.load_flame(17, 10, frame="flame").vertices, tr["flame"] / 4, atol=1e-6)


def test_mesh_vertex_order_and_indices(mini):
    m, truth = mini["manager"], mini["truth"]
    tr = truth[(143, 2)]
    reg = m.load_registration(143, 2)
    np.testing.assert_allclose(reg.vertices, tr["reg"], atol=1e-6)  # process=False keeps the order
    anchors, landmarks = m.anchors(143, 2), m.landmarks(143, 2)
    assert anchors.shape == (39, 3) and landmarks.shape == (68, 3)
    np.testing.assert_allclose(anchors, tr["reg"][FACTS["anchor_vertex_indices_registration"]], atol=1e-6)
    np.testing.assert_allclose(landmarks, tr["reg"][FACTS["landmark_vertex_indices_registration_68"]], atol=1e-6)
    assert len(m.load_flame(143, 2).vertices) == N_FLAME


def test_neck_mask(mini):
    m = mini["manager"]
    rng = np.random.default_rng(2)
    pts = rng.uniform(-1, 1, size=(1000, 3))
    np.testing.assert_array_equal(m.neck_keep_mask(pts, 199, 1), pts[:, 1] > -0.5)
    # margin acts on the un-normalised normal (0, 2, 0): 0.2 -> y > -0.5 + 0.1
    np.testing.assert_array_equal(m.neck_keep_mask(pts, 199, 1, margin=0.2), pts[:, 1] > -0.4)
    origin, normal = m.throat_plane(199, 1)
    np.testing.assert_allclose(origin, THROAT[0])
    np.testing.assert_allclose(normal, [0, 2, 0])
    assert not m.neck_keep_mask(np.array([[np.nan, 0, 0]]), 199, 1)[0]


def test_assets(mini):
    m = mini["manager"]
    mask = m.face_region_flame
    assert mask.shape == (N_FLAME,) and mask.dtype == bool
    np.testing.assert_array_equal(np.flatnonzero(mask), mini["region_ids"])
    np.testing.assert_array_equal(m.face_mask_registration, mini["face_mask"])
    assert m.anchors_mean.shape == (39, 3)


# ---------------------------------------------------------------------- errors
def test_missing_files(mini):
    m = mini["manager"]
    with pytest.raises(FileNotFoundError, match=r"017.011.scan\.ply"):
        m.load_scan(17, 11)
    with pytest.raises(FileNotFoundError, match=r"s\.npy"):
        m.transform(17, 11)
    with pytest.raises(FileNotFoundError, match="obs.npy"):
        m.load_observation(17, 11)


def test_unreadable_mesh(mini, tmp_path):
    m = mini["manager"]
    bad = m.scan_dir(236, 0)
    (bad / "scan.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1000\nGARBAGE\x00\x01")
    (bad / "flame.ply").write_text("this is not a mesh")
    try:
        with pytest.raises(MeshLoadError, match=r"236.000.scan\.ply"):
            m.load_scan(236, 0)
        with pytest.raises(MeshLoadError, match=r"flame\.ply"):
            m.neck_keep_mask(np.zeros((1, 3)), 236, 0)
    finally:
        (bad / "scan.ply").unlink()
        (bad / "flame.ply").unlink()


def test_load_observation_drops_missing_pixels(mini):
    m = mini["manager"]
    path = m.observation_path(143, 3, full=True)
    path.parent.mkdir(parents=True)
    pts = np.array([[0.0, 1.0, 2.0], [np.nan, np.nan, np.nan], [3.0, 4.0, 5.0]])
    np.save(path, pts)
    np.testing.assert_array_equal(m.load_observation(143, 3, full=True), pts[[0, 2]])
    np.save(path, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="full_obs.npy"):
        m.load_observation(143, 3, full=True)


@pytest.mark.slow
def test_example_usage_script(mini, tmp_path, capsys):
    import importlib.util

    path = REPO / "scripts" / "dataset" / "example_usage.py"
    spec = importlib.util.spec_from_file_location("example_usage_script", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    m = mini["manager"]
    desc_path = tmp_path / "description.json"
    m.description.save(desc_path)
    assert mod.main(["--data_dir", str(m.data_dir), "--description", str(desc_path), "--subject", "17",
                     "--out", str(tmp_path / "png"), "--size", "120",
                     "--single_view_dir", str(m.single_view_dir)]) == 0
    out = capsys.readouterr().out
    assert "registration 3900" in out and "FLAME 5023" in out
    for name in ("meshes", "expressions"):
        assert (tmp_path / "png" / f"subject_017_{name}.png").stat().st_size > 1000
