"""Evaluation: metrics against independent computations, render-based sampling on analytic
meshes, and eval.py + gather.py end to end on a tiny hand-made dataset."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from nphm.evaluation import (
    METRIC_KEYS,
    RELEASE_METRIC_KEYS,
    FaceRegion,
    NoSamplesError,
    RenderProtocol,
    eval_pointcloud,
    evaluation_cameras,
    render_samples,
    sample_rendered,
    sample_scan,
)
from nphm.rendering import fibonacci_sphere

REPO = Path(__file__).resolve().parents[1]
FAST = RenderProtocol().scaled(0.1)  # 96 x 128 images, same cameras


# ----------------------------------------------------------------------------- metrics
def _brute_force_metrics(pred, gt, pn, gn, scale, thresholds=(1, 5, 10, 20)):
    d = np.linalg.norm(pred[:, None] - gt[None], axis=-1)
    acc_i, comp_i = d.argmin(1), d.argmin(0)
    acc, comp = d.min(1) * scale, d.min(0) * scale
    unit = lambda n: n / np.linalg.norm(n, axis=1, keepdims=True)  # noqa: E731
    pn, gn = unit(pn), unit(gn)
    nacc = np.abs((pn * gn[acc_i]).sum(1)).mean()
    ncomp = np.abs((gn * pn[comp_i]).sum(1)).mean()
    out = {"accuracy": acc.mean(), "completeness": comp.mean(), "accuracy2": (acc**2).mean(),
           "completeness2": (comp**2).mean(), "normals accuracy": nacc, "normals completeness": ncomp,
           "normals consistency": (nacc + ncomp) / 2, "chamfer_l1": (acc.mean() + comp.mean()) / 2,
           "chamfer_l2": ((acc**2).mean() + (comp**2).mean()) / 2}
    for t, s in zip(thresholds, ("05", "10", "15", "20")):
        p, r = (acc <= t).mean(), (comp <= t).mean()
        out[f"precision_{s}"], out[f"recall_{s}"] = p, r
        out[f"f_score_{s}"] = 0.0 if p + r == 0 else 2 * p * r / (p + r)
    return out


def test_metric_keys_match_release():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(50, 3))
    m = eval_pointcloud(p, p + 0.01)
    assert list(m)[: len(RELEASE_METRIC_KEYS)] == list(RELEASE_METRIC_KEYS)
    assert list(m) == list(METRIC_KEYS)
    assert RELEASE_METRIC_KEYS == (
        "completeness", "accuracy", "normals completeness", "normals accuracy", "normals consistency",
        "completeness2", "accuracy2", "chamfer_l2", "chamfer_l1", "f_score_05", "f_score_10",
        "f_score_15", "f_score_20")
    # Without normals the normal metrics are NaN, the rest is defined.
    assert np.isnan(m["normals consistency"]) and np.isfinite(m["chamfer_l1"])
    assert all(isinstance(v, float) for v in m.values())
    json.dumps(m)


def test_identical_clouds():
    rng = np.random.default_rng(1)
    p = rng.normal(size=(500, 3))
    n = rng.normal(size=(500, 3))
    m = eval_pointcloud(p, p.copy(), n, -n, scale=250.0)  # flipped normals: orientation-free
    for k in ("accuracy", "completeness", "chamfer_l1", "chamfer_l2", "accuracy2", "completeness2"):
        assert m[k] == 0.0
    for k in ("f_score_05", "f_score_10", "f_score_15", "f_score_20", "precision_05", "recall_05"):
        assert m[k] == 1.0
    assert m["normals consistency"] == pytest.approx(1.0, abs=1e-12)


def test_concentric_spheres_exact_chamfer():
    dirs = fibonacci_sphere(3000)
    r_pred, r_gt = 1.00, 1.03
    # Same directions: the nearest neighbour of r1 * d_i is r2 * d_i, at distance |r1 - r2|.
    m = eval_pointcloud(r_pred * dirs, r_gt * dirs, dirs, dirs, scale=250.0)  # 0.03 -> 7.5 mm
    gap = 0.03 * 250.0
    for k in ("accuracy", "completeness", "chamfer_l1"):
        assert m[k] == pytest.approx(gap, rel=1e-9)
    assert m["chamfer_l2"] == pytest.approx(gap**2, rel=1e-9)
    assert m["normals consistency"] == pytest.approx(1.0)
    assert (m["f_score_05"], m["f_score_10"], m["f_score_15"], m["f_score_20"]) == (0.0, 0.0, 1.0, 1.0)
    # Differently sampled concentric spheres: distances between the gap and gap + spacing.
    m2 = eval_pointcloud(r_pred * fibonacci_sphere(2000), r_gt * dirs)
    assert 0.03 <= m2["accuracy"] < 0.03 + 0.03 and 0.03 <= m2["completeness"] < 0.06


def test_kdtree_equals_brute_force():
    rng = np.random.default_rng(2)
    pred = rng.normal(size=(230, 3)) * 0.02
    gt = rng.normal(size=(310, 3)) * 0.02
    pn, gn = rng.normal(size=pred.shape), rng.normal(size=gt.shape)
    scale = 1 / 0.0041
    m, err = eval_pointcloud(pred, gt, pn, gn, scale=scale, return_errors=True)
    ref = _brute_force_metrics(pred, gt, pn, gn, scale)
    for k, v in ref.items():
        assert m[k] == pytest.approx(v, rel=1e-10, abs=1e-12), k
    d = np.linalg.norm(pred[:, None] - gt[None], axis=-1)
    np.testing.assert_allclose(err["accuracy"], d.min(1) * scale, rtol=1e-12)
    np.testing.assert_allclose(err["completeness"], d.min(0) * scale, rtol=1e-12)
    assert err["accuracy_normals"].shape == (230,) and err["completeness_normals"].shape == (310,)
    # Intermediate F-scores actually occur (the thresholds are exercised).
    assert 0 < m["f_score_10"] < 1


def test_scale_to_mm():
    rng = np.random.default_rng(3)
    gt = rng.normal(size=(400, 3))
    pred = gt + np.array([0.01, 0.0, 0.0])  # well below the point spacing
    s = 0.004  # 1 nphm unit = 250 mm -> 0.01 = 2.5 mm
    m1 = eval_pointcloud(pred, gt, scale=1.0, thresholds=(1 * s, 5 * s, 10 * s, 20 * s))
    mm = eval_pointcloud(pred, gt, scale=1.0 / s)
    assert mm["chamfer_l1"] == pytest.approx(2.5)
    assert mm["chamfer_l1"] == pytest.approx(m1["chamfer_l1"] / s)
    assert mm["chamfer_l2"] == pytest.approx(m1["chamfer_l2"] / s**2)
    assert (mm["f_score_05"], mm["f_score_10"]) == (0.0, 1.0)  # 2.5 mm: above 1 mm, below 5 mm
    # The same thresholds expressed in nphm units give the same F-scores.
    for k in ("f_score_05", "f_score_10", "f_score_15", "f_score_20"):
        assert m1[k] == mm[k]


def test_bad_input_is_rejected():
    with pytest.raises(ValueError):
        eval_pointcloud(np.zeros((0, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError):
        eval_pointcloud(np.full((3, 3), np.nan), np.zeros((5, 3)))


# ----------------------------------------------------------------------------- sampling
def _closest_face(mesh, points):
    import point_cloud_utils as pcu

    d, fid, _ = pcu.closest_points_on_mesh(points.astype(np.float64), np.asarray(mesh.vertices, np.float64),
                                           np.asarray(mesh.faces, np.int32))
    return np.abs(d), fid


def _head_mesh():
    head = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    head.vertices *= [0.33, 0.45, 0.4]
    return head


def test_cameras_of_the_protocol():
    cams = evaluation_cameras()
    assert len(cams) == 10
    centers = np.array([c.center for c in cams])
    np.testing.assert_allclose(np.linalg.norm(centers, axis=1), 2.4)  # 0.6 in the FLAME frame
    assert np.all(np.abs(centers[:, 1]) < 2.4 * 0.99)  # the two poles are left out
    for c in cams:
        assert (c.width, c.height, c.fx, c.fy, c.cx, c.cy) == (960, 1280, 2440, 2440, 480, 640)
        assert (c.near, c.far) == (0.4, 8.0)
        np.testing.assert_allclose(c.rotation[:, 2], -c.center / np.linalg.norm(c.center))


def test_samples_lie_on_the_mesh_and_face_a_camera():
    head = _head_mesh()
    pts, nrm = sample_rendered(head, n_samples=4000, seed=0, protocol=FAST)
    assert pts.shape == nrm.shape == (4000, 3)
    d, fid = _closest_face(head, pts)
    assert d.max() < 1e-9
    np.testing.assert_allclose(np.abs((nrm * head.face_normals[fid]).sum(1)), 1.0, atol=1e-6)
    centers = np.array([c.center for c in evaluation_cameras(FAST)])
    view = pts[:, None] - centers[None]
    cos = (view * nrm[:, None]).sum(-1) / np.linalg.norm(view, axis=-1)
    assert np.all(cos.min(axis=1) < -0.01)


def test_back_faces_and_hidden_surfaces_are_not_sampled():
    head = _head_mesh()
    flipped = head.face_normals[:, 1] > 0.8  # invert the winding of the top cap
    faces = head.faces.copy()
    faces[flipped] = faces[flipped][:, ::-1]
    inner = trimesh.creation.icosphere(subdivisions=2, radius=0.1)  # hidden inside the head
    mesh = trimesh.util.concatenate([trimesh.Trimesh(head.vertices, faces, process=False), inner])
    pts, _ = render_samples(mesh, FAST)
    assert len(pts) > 1000
    _, fid = _closest_face(mesh, pts)
    assert not np.any(flipped[fid[fid < len(faces)]])
    assert np.all(fid < len(faces))  # nothing on the occluded inner sphere
    assert np.all(np.linalg.norm(pts, axis=1) > 0.2)
    # A fully inverted mesh shows no front face at all.
    with pytest.raises(NoSamplesError):
        sample_rendered(trimesh.Trimesh(head.vertices, head.faces[:, ::-1]), n_samples=10, protocol=FAST)


def test_random_draw_is_a_uniform_subset_of_the_rendered_pool():
    head = _head_mesh()
    full, _ = sample_rendered(head, n_samples=None, protocol=FAST)
    full_again, _ = render_samples(head, FAST)
    np.testing.assert_allclose(full, full_again)
    n = 5000
    draw, _ = sample_rendered(head, n_samples=n, seed=1, protocol=FAST)
    d, _ = cKDTree(full).query(draw)
    assert d.max() < 1e-9  # every draw is a rendered pixel hit
    assert len(np.unique(draw, axis=0)) == n  # without replacement
    # Fractions of a few regions agree with the full pool within 5 standard errors.
    for mask_fn in (lambda p: p[:, 1] > 0.2, lambda p: p[:, 0] < -0.1, lambda p: p[:, 2] > 0.3):
        f_pool = mask_fn(full).mean()
        f_draw = mask_fn(draw).mean()
        assert abs(f_draw - f_pool) < 5 * np.sqrt(f_pool * (1 - f_pool) / n)
    # More samples than hits: drawn with replacement from all of them.
    many, _ = sample_rendered(head, n_samples=len(full) + 100, seed=1, protocol=FAST)
    assert len(many) == len(full) + 100 and len(np.unique(many, axis=0)) <= len(full)


def test_neck_cut_and_face_region():
    head = _head_mesh()
    sphere_dirs = head.vertices / np.linalg.norm(head.vertices, axis=1, keepdims=True)
    face_vertices = head.vertices[sphere_dirs[:, 2] > 0.7]
    region = FaceRegion(face_vertices, face_vertices / np.array([0.33, 0.45, 0.4]) ** 2)

    def keep(p):
        return p[:, 1] > -0.2

    s = sample_scan(head, keep, region, n_samples=3000, seed=0, protocol=FAST)
    assert s.points.shape == (3000, 3) and s.points_face.shape == (3000, 3)
    assert s.points[:, 1].min() > -0.2 and s.points_face[:, 1].min() > -0.2
    assert np.all(region.contains(s.points_face))
    # The face samples are the front of the head; the head samples cover all around.
    assert s.points_face[:, 2].min() > 0.15
    assert s.points[:, 2].min() < -0.3
    assert 0.05 < region.contains(s.points).mean() < 0.5
    with pytest.raises(NoSamplesError):
        sample_scan(head, lambda p: p[:, 1] > 10.0, region, n_samples=10, protocol=FAST)
    # Without a draw, head and face samples are exactly the filtered pool of all rendered hits
    # (the face is rendered through smaller pixel windows: none of its pixels may be lost).
    pool, _ = render_samples(head, FAST)
    pool = pool[keep(pool)]
    every = sample_scan(head, keep, region, n_samples=None, protocol=FAST)
    for got, want in ((every.points, pool), (every.points_face, pool[region.contains(pool)])):
        assert got.shape == want.shape
        np.testing.assert_allclose(np.sort(got, axis=0), np.sort(want, axis=0))


def test_face_region_against_brute_force():
    rng = np.random.default_rng(4)
    v = rng.normal(size=(60, 3)) * 0.2
    n = rng.normal(size=(60, 3))
    region = FaceRegion(v, n, max_distance=0.04, max_plane_distance=0.02)
    p = v[rng.integers(0, 60, 4000)] + rng.normal(size=(4000, 3)) * 0.03
    d = np.linalg.norm(p[:, None] - v[None], axis=-1)
    i = d.argmin(1)
    nu = n / np.linalg.norm(n, axis=1, keepdims=True)
    plane = np.abs(((p - v[i]) * nu[i]).sum(1))
    expected = (d.min(1) <= 0.04) & (plane <= 0.02)
    assert 0.1 < expected.mean() < 0.9
    np.testing.assert_array_equal(region.contains(p), expected)


def test_face_region_from_flame_mask_and_indices():
    mesh = trimesh.creation.icosphere(subdivisions=2)
    mask = mesh.vertices[:, 2] > 0.5
    a = FaceRegion.from_flame(mesh, mask)
    b = FaceRegion.from_flame(mesh, np.flatnonzero(mask))
    np.testing.assert_array_equal(a.vertices, b.vertices)
    np.testing.assert_allclose(a.normals, mesh.vertex_normals[mask])
    with pytest.raises(ValueError):
        FaceRegion.from_flame(mesh, mask[:-1])


# ----------------------------------------------------------------------------- end to end
N_FLAME = 5023
RELEASE = json.loads((REPO / "dataset" / "nphm_release.json").read_text())
THROAT_Y = -0.3


def _fake_flame(head: trimesh.Trimesh) -> trimesh.Trimesh:
    """A FLAME-topology stand-in: the head's vertices first, padding after, the throat
    plane (y = THROAT_Y, normal +y, unit length) on the release's three vertex indices."""
    v = np.zeros((N_FLAME, 3))
    v[: len(head.vertices)] = head.vertices
    for idx, p in zip(RELEASE["throat_plane_flame_vertex_indices"],
                      [(0, THROAT_Y, 0), (0, THROAT_Y, 1), (1, THROAT_Y, 0)]):
        assert idx >= len(head.vertices)
        v[idx] = p
    return trimesh.Trimesh(v, head.faces, process=False)


def _write_dataset(root: Path, expressions):
    data = root / "dataset"
    head = trimesh.creation.icosphere(subdivisions=4)
    head.vertices *= [0.33, 0.45, 0.4]
    flame = _fake_flame(head)
    assets = data / "assets"
    assets.mkdir(parents=True)
    face = np.zeros(N_FLAME, bool)
    face[: len(head.vertices)] = head.vertices[:, 2] > 0.25
    np.save(assets / "face_region_flame.npy", face)
    np.save(assets / "anchors_39.npy", np.zeros((39, 3)))
    np.save(assets / "face.npy", np.ones(10, bool))
    flame.export(str(assets / "template.ply"))
    meshes = {}
    for subject, exprs in expressions.items():
        for e in exprs:
            d = data / f"{subject:03d}" / f"{e:03d}"
            d.mkdir(parents=True)
            scan = head.copy()
            scan.vertices[:, 2] += 0.02 * e * np.maximum(scan.vertices[:, 1], 0)  # expression-dependent
            scan.export(str(d / "scan.ply"))
            flame.export(str(d / "flame.ply"))
            np.save(d / "s.npy", np.array(0.004))  # 1 nphm unit = 250 mm
            np.save(d / "R.npy", np.eye(3))
            np.save(d / "t.npy", np.zeros(3))
            meshes[(subject, e)] = scan
    desc = dict(RELEASE, name="tiny", subjects_train=[], subjects_eval=[], subjects_test=sorted(expressions),
                neutral_open={str(s): 0 for s in expressions}, neutral_closed={}, invalid_expressions_test={},
                bad_scans={}, assets_dir="assets",
                assets={"anchors_mean": "anchors_39.npy", "face_mask_registration": "face.npy",
                        "face_region_flame": "face_region_flame.npy", "template": "template.ply"})
    (data / "dataset.json").write_text(json.dumps(desc))
    return data, meshes


def _run_script(name, argv):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_eval_script_{name}", REPO / "scripts" / "evaluation" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main([str(a) for a in argv])


def test_eval_and_gather_end_to_end(tmp_path, capsys):
    data, meshes = _write_dataset(tmp_path, {1: [0, 1], 2: [0]})
    results = tmp_path / "results"
    results.mkdir()
    for (subject, e), scan in meshes.items():
        pred = scan.copy()
        if subject == 2:
            pred.vertices *= 1.01  # a uniformly scaled prediction: ~1 mm off
        pred.export(str(results / f"{subject}_{e}.ply"))
    (results / "1_1.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\ngarbage")  # corrupted
    common = ["--results_dir", results, "--data_dir", data, "--single_view_dir", tmp_path / "none",
              "--n_samples", 20000, "--resolution_scale", 0.2, "--no_figures"]
    assert _run_script("eval", common) == 3  # a broken prediction: some scans failed
    out = capsys.readouterr().out
    assert "FAILED subject 1 expression 1" in out

    ev = results / "evaluation"
    failures = json.loads((ev / "failures.json").read_text())
    assert [(f["subject"], f["expression"]) for f in failures] == [(1, 1)]
    assert "1_1.ply" in failures[0]["error"]
    assert not (ev / "1" / "expression_1" / "metrics.json").exists()
    for subject, e in ((1, 0), (2, 0)):
        folder = ev / str(subject) / f"expression_{e}"
        m = json.loads((folder / "metrics.json").read_text())
        mf = json.loads((folder / "metrics_face.json").read_text())
        assert list(m)[:13] == list(RELEASE_METRIC_KEYS) and list(mf)[:13] == list(RELEASE_METRIC_KEYS)
        assert not (folder / "report.png").exists()
        assert (ev / "gt_cache" / str(subject) / f"expression_{e}" / "gt_samples.npz").is_file()
    m_same = json.loads((ev / "1" / "expression_0" / "metrics.json").read_text())
    m_scaled = json.loads((ev / "2" / "expression_0" / "metrics.json").read_text())
    # Same mesh: only the sampling differs (sample spacing ~2 mm); scaled by 1 %: ~1 mm more.
    assert m_same["chamfer_l1"] < 1.5 and m_same["normals consistency"] > 0.97
    assert m_same["chamfer_l1"] + 0.3 < m_scaled["chamfer_l1"] < m_same["chamfer_l1"] + 2.0
    assert m_scaled["f_score_20"] == 1.0

    # The ground-truth cache is reused for the same settings and redone for others.
    from nphm.data import DataManager
    from nphm.evaluation import EvalSettings, ground_truth_samples

    manager = DataManager(data, single_view_dir=tmp_path / "none")
    cache = ev / "gt_cache"
    settings = EvalSettings(n_samples=20000, resolution_scale=0.2)
    with np.load(cache / "1" / "expression_0" / "gt_samples.npz") as z:
        cached = np.array(z["points"])
    again = ground_truth_samples(manager, 1, 0, settings, cache)
    np.testing.assert_array_equal(again.points, cached)
    other = ground_truth_samples(manager, 1, 0, EvalSettings(n_samples=500, resolution_scale=0.2), cache)
    assert other.points.shape == (500, 3)
    with np.load(cache / "1" / "expression_0" / "gt_samples.npz") as z:
        assert z["points"].shape == (500, 3)
    ground_truth_samples(manager, 1, 0, settings, cache)  # restore for the metrics below

    # Second run: finished scans are skipped, the broken one is reported again.
    assert _run_script("eval", common) == 3
    out = capsys.readouterr().out
    assert "evaluated 0, skipped 2" in out and "failed 1" in out

    assert _run_script("gather", ["--results_dir", results]) == 3  # the ledger holds the failed scan
    out = capsys.readouterr().out
    assert "| head |" in out and "| face |" in out
    with open(ev / "total_metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and list(rows[0])[:13] == list(RELEASE_METRIC_KEYS)
    assert float(rows[0]["chamfer_l1"]) == pytest.approx((m_same["chamfer_l1"] + m_scaled["chamfer_l1"]) / 2)
    assert (ev / "total_metrics_face.csv").is_file()
    with open(ev / "per_subject_metrics.csv") as f:
        per_subject = {int(r["subject"]): r for r in csv.DictReader(f)}
    assert set(per_subject) == {1, 2} and per_subject[2]["n_scans"] == "1"
    report = (ev / "report.md").read_text()
    assert "| 1 | 0 |" in report and "Failed scans" in report and "report.png" not in report


def test_gather_reads_release_style_folders(tmp_path):
    """Old result folders with only the release's keys (and no pictures) still gather."""
    from nphm.evaluation import gather

    ev = tmp_path / "evaluation"
    values = {(3, 0): 1.0, (3, 2): 3.0, (5, 1): 5.0}
    for (s, e), v in values.items():
        folder = ev / str(s) / f"expression_{e}"
        folder.mkdir(parents=True)
        m = {k: v for k in RELEASE_METRIC_KEYS}
        (folder / "metrics.json").write_text(json.dumps(m))
        (folder / "metrics_face.json").write_text(json.dumps({k: v / 10 for k in RELEASE_METRIC_KEYS}))
    g = gather(tmp_path)
    assert g.totals["head"]["chamfer_l1"] == pytest.approx(3.0)  # mean over scans, not subjects
    assert g.per_subject["head"][3]["chamfer_l1"] == pytest.approx(2.0)
    assert g.totals["face"]["f_score_05"] == pytest.approx(0.3)
    with open(ev / "total_metrics.csv") as f:
        assert next(csv.reader(f)) == list(RELEASE_METRIC_KEYS)


def test_eval_and_gather_on_a_synthetic_subject(tmp_path, capsys):
    """The generated dataset, "fitted" by perturbed registrations, with pictures."""
    from nphm.data import DataManager
    from nphm.preprocessing.observations import generate_observations
    from nphm.data.synthetic import generate_dataset

    data, views = tmp_path / "dataset", tmp_path / "single_view"
    report = generate_dataset(data, n_subjects=1, n_expressions=3, seed=0, progress=False)
    assert not report.failures
    manager = DataManager(data, single_view_dir=views)
    list(generate_observations(manager, [0], seed=0))
    results = tmp_path / "results"
    results.mkdir()
    manager.load_registration(0, 0).export(str(results / "0_0.ply"))
    scaled = manager.load_registration(0, 1)
    scaled.vertices *= 1.01
    scaled.export(str(results / "0_1.ply"))
    (results / "0_2.ply").write_text("solid garbage\n")  # corrupted prediction
    argv = ["--results_dir", results, "--data_dir", data, "--single_view_dir", views, "--subjects", 0,
            "--n_samples", 5000, "--resolution_scale", 0.15]
    assert _run_script("eval", argv) == 3
    assert "evaluated 2, skipped 0 already evaluated, failed 1" in capsys.readouterr().out
    assert _run_script("gather", ["--results_dir", results]) == 3
    out = capsys.readouterr().out
    assert "| head | 2 |" in out and "| face | 2 |" in out

    ev = results / "evaluation"
    m0 = json.loads((ev / "0" / "expression_0" / "metrics.json").read_text())
    m1 = json.loads((ev / "0" / "expression_1" / "metrics.json").read_text())
    assert m0["chamfer_l1"] < m1["chamfer_l1"] and m0["normals consistency"] > 0.9
    for e in (0, 1):
        assert (ev / "0" / f"expression_{e}" / "report.png").stat().st_size > 10_000
    assert [f["expression"] for f in json.loads((ev / "failures.json").read_text())] == [2]
    for name in ("total_metrics.csv", "total_metrics_face.csv", "per_subject_metrics.csv",
                 "per_subject_metrics_face.csv", "report.md", "report.html"):
        assert (ev / name).is_file(), name
    page = (ev / "report.html").read_text()
    assert '<img src="0/expression_1/report.png"' in page and "Failed scans" in page
