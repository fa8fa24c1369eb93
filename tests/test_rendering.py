"""Ray casting against analytic shapes: spheres and axis-aligned boxes."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh

import nphm.rendering as rendering
from nphm.rendering import Camera, MeshRayCaster, cast_rays, fibonacci_sphere, look_at


def _camera(eye, width=64, height=48, f=60.0, near=0.0, far=np.inf, target=(0, 0, 0)):
    return Camera(width, height, f, f, width / 2, height / 2, look_at(eye, target), near, far)


def _box_entry_exit(origin, dirs, half):
    """Analytic slab test for the box [-half, half]^3: (t_enter, t_exit, hit mask)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-half - origin) / dirs
        t2 = (half - origin) / dirs
    tmin = np.nanmax(np.minimum(t1, t2), axis=1)
    tmax = np.nanmin(np.maximum(t1, t2), axis=1)
    return tmin, tmax, (tmax >= tmin) & (tmax > 0)


def _sphere_entry(origin, dirs, radius):
    """Analytic first intersection of unit-direction rays with a centred sphere."""
    b = dirs @ origin
    c = origin @ origin - radius**2
    disc = b * b - c
    with np.errstate(invalid="ignore"):
        t = -b - np.sqrt(disc)
    return t, disc > 0


def test_look_at_frame():
    eye = np.array([0.3, 0.2, 2.0])
    m = look_at(eye, target=(0.0, 0.1, 0.0))
    r = m[:3, :3]
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(r), 1.0)
    np.testing.assert_allclose(m[:3, 3], eye)
    fwd = np.array([0.0, 0.1, 0.0]) - eye
    np.testing.assert_allclose(r[:, 2], fwd / np.linalg.norm(fwd), atol=1e-12)
    # World up appears upwards in the image (smaller row), world +x to the right.
    cam = Camera(100, 100, 50, 50, 50, 50, m)
    uv, z = cam.project(np.array([[0.0, 0.6, 0.0], [0.0, -0.4, 0.0], [0.5, 0.1, 0.0]]))
    assert uv[0, 1] < 50 < uv[1, 1]
    assert uv[2, 0] > 50
    assert np.all(z > 0)
    # Degenerate up (looking straight down) still gives a proper rotation.
    m2 = look_at((0, 3, 0), (0, 0, 0), up=(0, 1, 0))
    np.testing.assert_allclose(m2[:3, :3].T @ m2[:3, :3], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(m2[:3, 2], [0, -1, 0], atol=1e-12)


def test_rays_pixel_order_and_units():
    cam = _camera((0.0, 0.0, 3.0), width=7, height=5, f=4.0)
    origins, dirs = cam.rays()
    assert origins.shape == dirs.shape == (35, 3)
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0)
    np.testing.assert_allclose(origins, np.broadcast_to(cam.center, (35, 3)))
    # A point along ray k projects to the centre of pixel (k // W, k % W).
    uv, _ = cam.project(origins + 2.0 * dirs)
    k = np.arange(35)
    np.testing.assert_allclose(uv[:, 0], k % 7 + 0.5, atol=1e-9)
    np.testing.assert_allclose(uv[:, 1], k // 7 + 0.5, atol=1e-9)


@pytest.mark.parametrize("eye", [(0.3, 0.4, 3.0), (-2.0, 1.0, -1.5)])
def test_box_exact(eye):
    half = np.array([0.5, 0.3, 0.4])
    box = trimesh.creation.box(extents=2 * half)
    cam = _camera(eye, width=80, height=60, f=70.0)
    hits = cast_rays(cam, box.vertices, box.faces)

    origins, dirs = cam.rays()
    t_in, _, hit_ref = _box_entry_exit(cam.center, dirs, half)
    lin = hits.pixels[:, 0] * cam.width + hits.pixels[:, 1]
    hit_mask = np.zeros(len(dirs), bool)
    hit_mask[lin] = True
    # Rays that graze an edge may go either way; every other ray must agree.
    p_ref = cam.center + t_in[:, None] * dirs
    grazing = _box_entry_exit(cam.center, dirs, half * 0.999)[2] != _box_entry_exit(cam.center, dirs, half * 1.001)[2]
    assert grazing.sum() < 0.05 * len(dirs)
    assert np.array_equal(hit_mask[~grazing], hit_ref[~grazing])
    assert len(hits) > 300

    # Points: on the analytic box surface, on the analytic ray, at the analytic z-depth.
    on_face = np.abs(np.abs(hits.points) - half) < 1e-9
    assert np.all(on_face.any(axis=1))
    assert np.all(np.abs(hits.points) <= half + 1e-9)
    np.testing.assert_allclose(hits.points, p_ref[lin], atol=1e-9)
    z_ref = (p_ref[lin] - cam.center) @ cam.rotation[:, 2]
    np.testing.assert_allclose(hits.depth, z_ref, atol=1e-9)
    # Normals: the outward axis normal of the face hit, facing the camera.
    axis = np.argmax(on_face, axis=1)
    n_ref = np.zeros_like(hits.points)
    n_ref[np.arange(len(axis)), axis] = np.sign(hits.points[np.arange(len(axis)), axis])
    np.testing.assert_allclose(hits.normals, n_ref, atol=1e-9)
    assert np.all(np.einsum("nd,nd->n", hits.normals, dirs[lin]) < 0)
    # Pixels: projecting a hit back lands in the centre of its pixel.
    uv, z = cam.project(hits.points)
    np.testing.assert_allclose(uv, hits.pixels[:, ::-1] + 0.5, atol=1e-7)
    np.testing.assert_allclose(z, hits.depth, atol=1e-12)
    # Face ids point at triangles containing the hit point.
    tri = box.vertices[box.faces[hits.face_ids]]
    _, _, bary_ok = _barycentric_inside(tri, hits.points)
    assert np.all(bary_ok)


def _barycentric_inside(tri, p):
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    n = np.cross(b - a, c - a)
    area2 = np.einsum("nd,nd->n", n, n)
    w0 = np.einsum("nd,nd->n", np.cross(c - b, p - b), n) / area2
    w1 = np.einsum("nd,nd->n", np.cross(a - c, p - c), n) / area2
    w2 = 1 - w0 - w1
    inside = (w0 > -1e-9) & (w1 > -1e-9) & (w2 > -1e-9)
    plane = np.abs(np.einsum("nd,nd->n", p - a, n) / np.sqrt(area2)) < 1e-9
    return w0, w1, inside & plane


def test_near_far_clip_planes():
    half = np.array([0.5, 0.5, 0.5])
    box = trimesh.creation.box(extents=2 * half)
    eye = (0.0, 0.0, 3.0)  # front face at z-depth 2.5, back face at 3.5
    # Narrow field of view: every pixel sees the front face and, behind it, the back face.
    full = cast_rays(_camera(eye, f=400.0), box.vertices, box.faces)
    assert len(full) == 64 * 48 and np.allclose(full.depth, 2.5)
    inside = cast_rays(_camera(eye, f=400.0, near=3.0), box.vertices, box.faces)
    assert len(inside) == 64 * 48 and np.allclose(inside.depth, 3.5)
    # Seen from inside, the far face's outward normal points away from the camera.
    np.testing.assert_allclose(inside.normals, np.broadcast_to([0, 0, -1.0], inside.normals.shape), atol=1e-12)
    assert len(cast_rays(_camera(eye, f=400.0, far=2.4), box.vertices, box.faces)) == 0
    assert len(cast_rays(_camera(eye, f=400.0, near=3.6), box.vertices, box.faces)) == 0


def test_sphere_depth_against_analytic():
    radius = 0.7
    sphere = trimesh.creation.icosphere(subdivisions=6, radius=radius)
    cam = _camera((0.4, -0.3, 2.5), width=96, height=72, f=90.0)
    hits = cast_rays(cam, sphere.vertices, sphere.faces)
    _, dirs = cam.rays()
    lin = hits.pixels[:, 0] * cam.width + hits.pixels[:, 1]
    t, hit_ref = _sphere_entry(cam.center, dirs, radius)
    assert np.all(hit_ref[lin])
    # Hit points are on the tessellated sphere: within its chord error of the true one.
    sagitta = np.min(np.linalg.norm(sphere.triangles_center, axis=1))
    r = np.linalg.norm(hits.points, axis=1)
    assert np.all(r <= radius + 1e-9) and np.all(r >= radius - (radius - sagitta) * 1.5)
    # Away from the silhouette the z-depth matches the analytic intersection.
    p_ref = cam.center + t[lin, None] * dirs[lin]
    z_ref = (p_ref - cam.center) @ cam.rotation[:, 2]
    facing = -np.einsum("nd,nd->n", p_ref / radius, dirs[lin]) > 0.3
    assert facing.sum() > 1000
    np.testing.assert_allclose(hits.depth[facing], z_ref[facing], atol=4 * (radius - sagitta))
    # Analytic misses (beyond the silhouette) really miss.
    margin = np.abs(np.linalg.norm(np.cross(dirs, -cam.center), axis=1) - radius) > 0.01
    hit_mask = np.zeros(len(dirs), bool)
    hit_mask[lin] = True
    assert np.array_equal(hit_mask[margin], hit_ref[margin])
    uv, _ = cam.project(hits.points)
    np.testing.assert_allclose(uv, hits.pixels[:, ::-1] + 0.5, atol=1e-7)


def test_chunking_and_window_do_not_change_hits(monkeypatch):
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.3)
    cam = _camera((0.0, 0.2, 2.0), width=70, height=50, f=80.0)
    ref = cast_rays(cam, sphere.vertices, sphere.faces)
    monkeypatch.setattr(rendering, "_CHUNK", 333)
    monkeypatch.setattr(MeshRayCaster, "pixel_window", lambda self, c, *a, **k: (0, c.height, 0, c.width))
    other = cast_rays(cam, sphere.vertices, sphere.faces)
    assert np.array_equal(ref.pixels, other.pixels)
    assert np.array_equal(ref.face_ids, other.face_ids)
    np.testing.assert_allclose(ref.points, other.points, atol=1e-12)


def test_pixel_window_contains_every_hit():
    rng = np.random.default_rng(0)
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.3)
    sphere.apply_translation([0.25, -0.1, 0.0])  # off-axis, so perspective stretches it
    caster = MeshRayCaster(sphere.vertices, sphere.faces)
    cam = _camera((0.0, 0.0, 1.2), width=90, height=70, f=60.0)
    r0, r1, c0, c1 = caster.pixel_window(cam)
    every = caster.cast_pixels(cam, *np.divmod(np.arange(90 * 70), 90))  # all pixels, no window
    assert len(every) > 100
    assert np.all((every.pixels[:, 0] >= r0) & (every.pixels[:, 0] < r1))
    assert np.all((every.pixels[:, 1] >= c0) & (every.pixels[:, 1] < c1))
    # Balls around points: every point of a ball projects inside (off-axis balls included,
    # which perspective stretches by up to 1 + tan^2 of the off-axis angle).
    cam = _camera((0.0, 0.0, 1.2), width=400, height=400, f=200.0)
    radius = 0.05
    for center in [(0.7, 0.0, 0.2), (-0.6, 0.55, 0.1), (0.0, 0.0, 0.0), (0.3, -0.4, -0.5)]:
        r0, r1, c0, c1 = caster.pixel_window(cam, points=np.array([center]), radius=radius)
        d = rng.normal(size=(20000, 3))
        q = np.asarray(center) + radius * d / np.linalg.norm(d, axis=1, keepdims=True)
        uv, _ = cam.project(q)
        col, row = np.floor(uv).T
        assert np.all((row >= r0) & (row < r1) & (col >= c0) & (col < c1))


def test_empty_and_offscreen():
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    cam = _camera((0.0, 0.0, 2.0), target=(0.0, 0.0, 4.0))  # looking away
    assert len(cast_rays(cam, sphere.vertices, sphere.faces)) == 0
    assert len(cast_rays(_camera((0.0, 0.0, 2.0)), np.zeros((0, 3)), np.zeros((0, 3), int))) == 0
    with pytest.raises(ValueError):
        cast_rays(_camera((0, 0, 2)), sphere.vertices, sphere.faces + len(sphere.vertices))


def test_fibonacci_sphere():
    p = fibonacci_sphere(12)
    assert p.shape == (12, 3)
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1.0)
    np.testing.assert_allclose(p[0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(p[-1], [0, -1, 0], atol=1e-12)
    # Heights are equally spaced; roughly uniform: the mean is near the centre.
    np.testing.assert_allclose(np.diff(p[:, 1]), -2 / 11)
    q = fibonacci_sphere(2000)
    assert np.linalg.norm(q.mean(axis=0)) < 0.01
    # Nearest-neighbour spacing is nearly constant (no clustering).
    from scipy.spatial import cKDTree

    d, _ = cKDTree(q).query(q, k=2)
    assert d[:, 1].max() / d[:, 1].min() < 2.0
