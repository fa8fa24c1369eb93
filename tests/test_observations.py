"""Single-view observations on an analytic head: a sphere on a cylindrical neck."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import point_cloud_utils as pcu
import pytest
import trimesh

from nphm.data import DataManager
from nphm.preprocessing.observations import (
    ObservationProtocol,
    back_eye,
    frontal_directions,
    frontal_eye,
    generate_observations,
    item_rngs,
)

REPO = Path(__file__).resolve().parents[1]
RELEASE = json.loads((REPO / "dataset" / "nphm_release.json").read_text())
THROAT_Y = -0.5  # neck plane y = -0.5, normal +y
RES = 120  # small image; the protocol scales the focal length with it
PROTOCOL = ObservationProtocol(resolution=RES)


def _head() -> trimesh.Trimesh:
    head = trimesh.creation.icosphere(subdivisions=4, radius=0.7)
    head.apply_translation([0.0, 0.25, 0.0])
    neck = trimesh.creation.cylinder(radius=0.3, height=1.5, sections=48)
    neck.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    neck.apply_translation([0.0, -0.75, 0.0])  # y in [-1.5, 0]
    return trimesh.util.concatenate([head, neck])


def _flame(rng) -> trimesh.Trimesh:
    v = rng.normal(size=(5023, 3))
    # cross((0,0,1), (1,0,0)) = (0,1,0): keep y > THROAT_Y
    for idx, p in zip(RELEASE["throat_plane_flame_vertex_indices"],
                      [(0, THROAT_Y, 0), (0, THROAT_Y, 1), (1, THROAT_Y, 0)]):
        v[idx] = p
    return trimesh.Trimesh(v, rng.integers(0, 5023, size=(100, 3)), process=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("obs")
    data = root / "dataset"
    rng = np.random.default_rng(0)
    head = _head()
    # subject 1: expressions 0, 1, 2 (2 is an invalid test expression); subject 2: one broken scan
    for subject, expressions in ((1, [0, 1, 2]), (2, [0, 1])):
        for e in expressions:
            d = data / f"{subject:03d}" / f"{e:03d}"
            d.mkdir(parents=True)
            head.export(str(d / "scan.ply"))
            _flame(rng).export(str(d / "flame.ply"))
    (data / "002" / "001" / "scan.ply").write_text("not a mesh")
    desc = dict(RELEASE, name="analytic", subjects_train=[], subjects_eval=[], subjects_test=[1, 2],
                neutral_open={"1": 0, "2": 0}, neutral_closed={}, invalid_expressions_test={"1": [2]},
                bad_scans={}, assets_dir="assets")
    (data / "dataset.json").write_text(json.dumps(desc))
    return dict(root=root, data=data, head=head)


def _manager(dataset, out: str) -> DataManager:
    return DataManager(dataset["data"], single_view_dir=dataset["root"] / out)


@pytest.fixture(scope="module")
def generated(dataset):
    m = _manager(dataset, "sv_a")
    results = list(generate_observations(m, m.subjects("test"), seed=3, protocol=PROTOCOL))
    return m, results


def test_protocol_cameras():
    dirs = frontal_directions()
    assert 50 < len(dirs) < 200
    assert np.all((dirs[:, 2] > 0.6) & (dirs[:, 2] < 0.9) & (np.abs(dirs[:, 1]) < 0.55))
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0, atol=1e-12)
    eye = frontal_eye(np.random.default_rng(0))
    assert np.isclose(np.linalg.norm(eye), 0.65 * 4)
    # behind the head (-z), raised by 0.4 flame units, all times 4
    np.testing.assert_allclose(back_eye(), [0.0, 1.6, -2.6], atol=1e-12)


def test_items_and_failures(generated):
    m, results = generated
    status = {(r.subject, r.expression): r.status for r in results}
    assert status == {(1, 0): "done", (1, 1): "done", (2, 0): "done", (2, 1): "failed"}
    failed = [r for r in results if r.status == "failed"][0]
    assert "scan.ply" in failed.message
    # back view only for the first test expression; invalid expression 2 not rendered
    assert m.observation_path(1, 0, back=True).is_file() and m.observation_path(1, 0, back=True, full=True).is_file()
    assert not m.observation_path(1, 1, back=True).exists()
    assert not m.observation_path(1, 2).parent.exists()
    assert m.observation_path(1, 0).parent == m.single_view_dir / "001" / "0"


def _first_hit_distance(mesh, origin, points):
    dirs = points - origin
    dist = np.linalg.norm(dirs, axis=1)
    origins = np.repeat(origin[None], len(points), axis=0)
    fid, _, t = pcu.ray_mesh_intersection(np.asarray(mesh.vertices, dtype=np.float64),
                                          np.asarray(mesh.faces, dtype=np.int32), origins, dirs / dist[:, None])
    return np.where(fid >= 0, t, np.inf), dist


@pytest.mark.parametrize("back", [False, True])
def test_points_on_surface_visible_and_above_neck(dataset, generated, back):
    m, _ = generated
    head = dataset["head"]
    obs = np.load(m.observation_path(1, 0, back=back))
    full = np.load(m.observation_path(1, 0, back=back, full=True))
    assert obs.shape == (2500, 3)
    assert len(full) > 2500
    for pts in (obs, full[:: max(1, len(full) // 3000)]):
        dist, _, _ = pcu.closest_points_on_mesh(pts.astype(np.float64), np.asarray(head.vertices, dtype=np.float64),
                                                np.asarray(head.faces, dtype=np.int32))
        assert np.abs(dist).max() < 1e-3
    # visible: nothing is hit before the point on the ray from the camera
    eye = back_eye(PROTOCOL) if back else frontal_eye(item_rngs(3, 1, 0)[0], PROTOCOL)
    t, dist = _first_hit_distance(head, eye, obs.astype(np.float64))
    assert np.all(t >= dist - 1e-4)
    # neck cut: the full view sees neck below the plane, the observation keeps none of it
    assert np.any(full[:, 1] < THROAT_Y - 0.05)
    assert np.all(obs[:, 1] > THROAT_Y)
    # each point is drawn from the full view's points
    assert len(np.unique(obs, axis=0)) == 2500


def test_determinism_skip_and_workers(dataset, generated):
    m_a, _ = generated
    m_b = _manager(dataset, "sv_b")
    results = list(generate_observations(m_b, [1], seed=3, protocol=PROTOCOL, workers=2))
    assert sorted(r.status for r in results) == ["done", "done"]
    for e, back in ((0, False), (0, True), (1, False)):
        np.testing.assert_array_equal(np.load(m_a.observation_path(1, e, back=back)),
                                      np.load(m_b.observation_path(1, e, back=back)))
    # finished items are skipped
    assert {r.status for r in generate_observations(m_b, [1], seed=3, protocol=PROTOCOL)} == {"skipped"}
    # another seed gives another observation
    m_c = _manager(dataset, "sv_c")
    list(generate_observations(m_c, [1], seed=4, protocol=PROTOCOL))
    assert not np.array_equal(np.load(m_a.observation_path(1, 1)), np.load(m_c.observation_path(1, 1)))


def test_script(dataset, tmp_path):
    import importlib.util

    path = REPO / "scripts" / "data_processing" / "generate_single_view_observations.py"
    spec = importlib.util.spec_from_file_location("gen_obs_script", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "sv"
    rc = mod.main(["--data_dir", str(dataset["data"]), "--out_dir", str(out), "--subjects", "1",
                   "--resolution", "60", "--n_points", "100", "--seed", "1"])
    assert rc == 0
    assert np.load(out / "001" / "1" / "obs.npy").shape == (100, 3)
    rc = mod.main(["--data_dir", str(dataset["data"]), "--out_dir", str(out), "--subjects", "2",
                   "--resolution", "60"])
    assert rc == 3  # subject 2 has a broken scan; the other one is still written
    assert (out / "002" / "0" / "obs.npy").is_file()


def test_synthetic_subject(tmp_path):
    """End to end on one generated head (registration, FLAME-like mesh, noisy open scan)."""
    from nphm.data.synthetic import generate_dataset

    generate_dataset(tmp_path / "dataset", n_subjects=1, n_expressions=2, seed=0, progress=False)
    m = DataManager(tmp_path / "dataset", single_view_dir=tmp_path / "sv")
    results = list(generate_observations(m, [0], seed=0, protocol=ObservationProtocol(resolution=200)))
    assert [r.status for r in results] == ["done", "done"]
    scan = m.load_scan(0, 0)
    v, f = np.asarray(scan.vertices, dtype=np.float64), np.asarray(scan.faces, dtype=np.int32)
    for e, back in ((0, False), (0, True), (1, False)):
        obs = m.load_observation(0, e, back=back)
        assert obs.shape == (2500, 3)
        assert np.all(m.neck_keep_mask(obs, 0, e))
        if e == 0:
            dist, _, _ = pcu.closest_points_on_mesh(obs, v, f)
            assert np.abs(dist).max() < 1e-3
        full = m.load_observation(0, e, back=back, full=True)
        assert not np.all(m.neck_keep_mask(full, 0, e))  # the open neck is visible below the plane
