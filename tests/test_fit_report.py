"""Judging a fit: scan-to-fit distances in mm, error-coloured meshes and the fit pictures."""
import json

import numpy as np
import pytest
import trimesh
from matplotlib import colormaps

from nphm.fitting.alignment import Similarity, mm_per_nphm
from nphm.fitting.report import (
    ERROR_COLORMAP,
    UNOBSERVED_RGB,
    distance_summary,
    error_colors,
    face_anchors,
    face_mask,
    fit_report,
    landmark_residuals,
    near_mask,
    vertex_errors,
    write_error_mesh,
    write_fit_report,
)

R = 0.3  # sphere radius, nphm units
MM = 250.0  # mm per nphm unit at the model's scale


def sphere(radius=R) -> trimesh.Trimesh:
    return trimesh.creation.icosphere(subdivisions=4, radius=radius)


def shell_points(offset_mm: float, n=4000, front_only=False, seed=0) -> np.ndarray:
    """Points ``offset_mm`` outside the sphere (nphm frame); the front half (z > 0) only if asked."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    if front_only:
        d[:, 2] = np.abs(d[:, 2])
    return d * (R + offset_mm / MM)


def test_mm_per_nphm():
    assert mm_per_nphm(0.004, "mm") == pytest.approx(1 / 0.004 * 0.004 * MM)
    assert mm_per_nphm(1.0, "nphm") == pytest.approx(MM)
    assert mm_per_nphm(0.002, "mm") == pytest.approx(500.0)  # a scan in mm shrunk by 2 to fit the head
    assert mm_per_nphm(0.5) == MM  # no unit: the model's scale


def test_distance_summary_in_mm_with_face_statistics():
    mesh = sphere()
    pts = shell_points(2.0)
    front = pts[:, 2] > 0.2
    pts[front] = pts[front] / np.linalg.norm(pts[front], axis=1, keepdims=True) * (R + 0.5 / MM)
    summary = distance_summary(pts, mesh, MM, face_mask=front)
    # icosphere facets lie up to ~0.2 mm inside the true sphere
    assert summary["head"]["median"] == pytest.approx(2.0, abs=0.3)
    assert summary["face"]["median"] == pytest.approx(0.5, abs=0.3)
    assert summary["face"]["n_points"] == front.sum() and summary["head"]["n_points"] == len(pts)
    assert summary["head"]["p90"] >= summary["head"]["median"]
    assert summary["per_point_mm"].shape == (len(pts),)
    # an index set is the same as the mask
    by_index = distance_summary(pts, mesh, MM, face_mask=np.flatnonzero(front))
    assert by_index["face"] == summary["face"]
    assert distance_summary(pts, mesh, MM)["face"] is None
    with pytest.raises(ValueError, match="face mask"):
        distance_summary(pts, mesh, MM, face_mask=front[:10])


def test_face_mask_from_frontal_anchors():
    anchors = np.array([[0, 0, 0.3], [0.1, 0, 0.25], [0, 0.1, 0.28], [0.3, 0, -0.1], [0, 0, -0.4], [-0.3, 0, -0.1]])
    np.testing.assert_array_equal(face_anchors(anchors), anchors[:3])
    pts = np.array([[0, 0, 0.32], [0.3, 0.0, -0.12], [0, 0, -0.3]])
    np.testing.assert_array_equal(face_mask(pts, anchors), [True, False, False])
    np.testing.assert_array_equal(near_mask(pts, anchors[3:], 0.05), [False, True, False])


def test_vertex_errors_mark_what_the_scan_does_not_see():
    mesh = sphere()
    d_mm, observed = vertex_errors(mesh, shell_points(3.0, front_only=True), MM)
    z = mesh.vertices[:, 2]
    assert observed[z > 0.05].all() and not observed[z < -0.05].any()
    assert np.isnan(d_mm[~observed]).all()
    assert np.median(d_mm[observed]) == pytest.approx(3.0, abs=0.3)
    # the summary's distances and feet give the same errors without a second closest-point pass
    pts = shell_points(3.0, front_only=True)
    summary = distance_summary(pts, mesh, MM)
    np.testing.assert_allclose(np.linalg.norm(summary["feet"] - pts, axis=1) * MM, summary["per_point_mm"], rtol=1e-9)
    again, seen = vertex_errors(mesh, pts, MM, summary=summary)
    np.testing.assert_array_equal(seen, observed)
    np.testing.assert_allclose(again[seen], d_mm[observed], rtol=1e-9)


def test_error_colours_follow_the_fixed_scale():
    cmap = colormaps[ERROR_COLORMAP]
    rgba = error_colors(np.array([0.0, 2.5, 5.0, 12.0, np.nan]), max_mm=5.0)
    expected = (np.array([cmap(0.0), cmap(0.5), cmap(1.0), cmap(1.0)]) * 255).round()
    np.testing.assert_array_equal(rgba[:4, :3], expected[:, :3])
    np.testing.assert_array_equal(rgba[4, :3], UNOBSERVED_RGB)
    assert (rgba[:, 3] == 255).all()
    hidden = error_colors(np.array([1.0, 1.0]), observed=np.array([True, False]))
    np.testing.assert_array_equal(hidden[1, :3], UNOBSERVED_RGB)


def test_error_mesh_file_has_colours_and_distances(tmp_path):
    mesh = sphere()
    path = write_error_mesh(tmp_path / "err.ply", mesh, shell_points(1.0, front_only=True), MM)
    back = trimesh.load(str(path), process=False)
    assert len(back.vertices) == len(mesh.vertices)
    colors = np.asarray(back.visual.vertex_colors)
    raw = back.metadata["_ply_raw"]["vertex"]["data"]
    d_mm, observed = raw["distance_mm"], raw["observed"].astype(bool)
    np.testing.assert_array_equal(colors[~observed, :3], np.tile(UNOBSERVED_RGB, ((~observed).sum(), 1)))
    np.testing.assert_array_equal(colors[observed], error_colors(d_mm[observed].astype(np.float64)))
    assert np.nanmedian(d_mm) == pytest.approx(1.0, abs=0.3)
    with pytest.raises(ValueError, match=".ply"):
        write_error_mesh(tmp_path / "err.obj", mesh, shell_points(1.0), MM)


def test_landmark_residuals_and_json_record():
    T = Similarity(0.004, np.eye(3), np.zeros(3))
    ref = np.array([[0.0, 0.0, 0.3], [0.1, 0.0, 0.2], [0.0, 0.1, 0.2]])
    lm = T.invert(ref)
    lm[0, 0] += 2.0  # 2 mm off
    res = landmark_residuals(lm, ref, T, mm_per_nphm(T.scale, "mm"))
    assert res["per_landmark"] == pytest.approx([2.0, 0.0, 0.0], abs=1e-9)
    assert res["max"] == pytest.approx(2.0) and res["median"] == pytest.approx(0.0, abs=1e-9)
    summary = distance_summary(shell_points(1.0, n=500), sphere(), MM, face_mask=np.arange(100))
    record = fit_report(summary, T, alignment={"method": "landmarks"}, landmarks=res, unit="mm")
    text = json.dumps(record)  # plain JSON: no arrays
    back = json.loads(text)
    assert "per_point_mm" not in back["distances_mm"] and back["distances_mm"]["face"]["n_points"] == 100
    assert back["transform"]["scale"] == 0.004 and back["landmark_residuals_mm"]["max"] == pytest.approx(2.0)
    assert back["alignment"]["method"] == "landmarks" and back["unit"] == "mm"


def test_write_fit_report_files(tmp_path):
    T = Similarity(0.004, np.eye(3), np.zeros(3))
    pts = shell_points(1.0, n=1500, front_only=True)
    record = write_fit_report(tmp_path, "scan", pts, sphere(), T, mm_per_nphm(T.scale, "mm"), face_mask=pts[:, 2] > 0.2,
                              figure=False)
    assert record["files"] == {"error_mesh": "scan_error.ply"} and (tmp_path / "scan_error.ply").is_file()
    assert record["distances_mm"]["head"]["median"] == pytest.approx(1.0, abs=0.3)
    json.dumps(record)


# --------------------------------------------------------------------------- pictures
iio = pytest.importorskip("imageio.v3")
pytest.importorskip("pyvista")


def _saturated(image: np.ndarray) -> np.ndarray:
    return image.max(axis=-1).astype(int) - image.min(axis=-1) > 60


def test_fit_overview_picture(tmp_path):
    from nphm.pictures import fit_overview_figure

    tile = (200, 180)
    mesh = sphere()
    pts = shell_points(2.0, n=3000, front_only=True)
    summary = distance_summary(pts, mesh, MM, face_mask=pts[:, 2] > 0.25)
    path = fit_overview_figure(tmp_path / "o.png", pts, mesh, MM, summary, title="sphere", tile=tile)
    image = iio.imread(path)[..., :3]
    assert image.shape == (3 * tile[1], 3 * tile[0], 3)
    h, w = tile
    colored = _saturated(image)
    # every panel draws something coloured: blue scan points, the error map, the coloured scan
    for row in range(3):
        for col in range(3):
            panel = colored[row * tile[1]:(row + 1) * tile[1], col * tile[0]:(col + 1) * tile[0]]
            assert panel.sum() > 200, (row, col)
    # the side view of the error map: the back half (not covered) is grey, the front coloured
    side = image[tile[1]:2 * tile[1], tile[0]:2 * tile[0]]
    grey = (np.abs(side.astype(int) - np.array(UNOBSERVED_RGB)).max(axis=-1) < 40) | (
        (side.max(axis=-1).astype(int) - side.min(axis=-1) < 12) & (side.min(axis=-1) < 235))
    assert grey.sum() > 1000 and _saturated(side).sum() > 1000
    # computing the summary itself gives the same picture size
    again = fit_overview_figure(tmp_path / "p.png", pts, mesh, MM, tile=tile)
    assert iio.imread(again).shape[:2] == image.shape[:2]


def test_alignment_picture(tmp_path):
    from nphm.fitting.alignment import Target
    from nphm.pictures import alignment_figure

    mesh = sphere()
    pts = shell_points(0.0, n=2000, front_only=True)
    target = Target(mesh.vertices, mesh.vertex_normals)
    for reference in (mesh, target):
        path = alignment_figure(tmp_path / "a.png", pts, reference, caption="margin 0.8", tile=(200, 200))
        image = iio.imread(path)[..., :3]
        assert image.shape == (200, 600, 3)
        r, g, b = (image[..., i].astype(int) for i in range(3))
        orange = (r > 200) & (g > 100) & (g < 190) & (b < 80)
        assert all(orange[:, 200 * k:200 * (k + 1)].sum() > 100 for k in range(3))

