"""Depth frames: back-projecting a ray-cast depth map lands on the mesh; masks, gaps, 16-bit PNGs."""
from __future__ import annotations

import numpy as np
import point_cloud_utils as pcu
import pytest
import trimesh

from nphm.fitting.depth import (
    Intrinsics,
    back_project,
    camera_to_y_up,
    load_depth_frame,
    load_depth_frames,
    read_depth,
    read_mask,
    write_depth_png,
)
from nphm.rendering import Camera, MeshRayCaster, look_at

H, W = 48, 64


@pytest.fixture(scope="module")
def scene():
    """A sphere before a box (metres), a camera 0.6 m away, and its rendered z-depth (H, W) (0 = miss)."""
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.12)
    box = trimesh.creation.box(extents=(0.5, 0.4, 0.05))
    box.apply_translation((0.0, 0.0, -0.2))
    mesh = trimesh.util.concatenate([sphere, box])
    camera = Camera(W, H, fx=70.0, fy=72.0, cx=31.0, cy=25.0,
                    cam_to_world=look_at((0.1, 0.08, 0.6), (0.02, 0.0, 0.0)))
    hits = MeshRayCaster(mesh.vertices, mesh.faces).cast(camera)
    depth = np.zeros((H, W))
    depth[hits.pixels[:, 0], hits.pixels[:, 1]] = hits.depth
    assert 0.3 * H * W < len(hits) < H * W  # some background too
    return mesh, camera, depth


def _distance_to_mesh(points_world: np.ndarray, mesh: trimesh.Trimesh) -> np.ndarray:
    d, _, _ = pcu.closest_points_on_mesh(points_world, np.asarray(mesh.vertices), np.asarray(mesh.faces))
    return d


def _to_world(points_cam: np.ndarray, camera: Camera) -> np.ndarray:
    return points_cam @ camera.rotation.T + camera.center


def test_back_projected_depth_lies_on_the_mesh(scene):
    mesh, camera, depth = scene
    points, pixels = back_project(depth, Intrinsics.from_camera(camera))
    assert len(points) == int((depth > 0).sum())
    np.testing.assert_array_equal(pixels, np.argwhere(depth > 0))  # row-major, only measured pixels
    assert _distance_to_mesh(_to_world(points, camera), mesh).max() < 1e-4
    np.testing.assert_allclose(points[:, 2], depth[depth > 0])  # z-depth, not ray length
    # and they project back onto their pixel centres
    uv, _ = camera.project(_to_world(points, camera))
    np.testing.assert_allclose(uv, pixels[:, ::-1] + 0.5, atol=1e-9)


def test_mask_and_missing_depths_drop_exactly_their_pixels(scene, tmp_path):
    mesh, camera, depth = scene
    d = depth.copy()
    rng = np.random.default_rng(0)
    measured = np.argwhere(d > 0)
    gone = measured[rng.choice(len(measured), 60, replace=False)]
    d[gone[:30, 0], gone[:30, 1]] = 0.0
    d[gone[30:, 0], gone[30:, 1]] = np.nan
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[5:40, 10:50] = 255
    np.save(tmp_path / "frame.npy", d)
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "mask.png", mask)
    frame = load_depth_frame(tmp_path / "frame.npy", Intrinsics.from_camera(camera), mask=tmp_path / "mask.png")
    expected = np.argwhere((np.nan_to_num(d) > 0) & (mask > 0))
    np.testing.assert_array_equal(frame.pixels, expected)
    assert frame.name == "frame" and frame.shape == (H, W)
    assert _distance_to_mesh(_to_world(frame.points, camera), mesh).max() < 1e-4


def test_16bit_png_round_trip_with_depth_scale(scene, tmp_path):
    mesh, camera, depth = scene
    path = write_depth_png(tmp_path / "d.png", depth, depth_scale=10_000.0)  # 0.1 mm steps
    import imageio.v3 as iio

    assert iio.imread(path).dtype == np.uint16
    back = read_depth(path, depth_scale=10_000.0)
    np.testing.assert_array_equal(np.isnan(back), depth == 0)
    assert np.nanmax(np.abs(back - depth)) <= 0.5e-4 + 1e-12
    # the default scale of PNGs is millimetres
    write_depth_png(tmp_path / "mm.png", depth)
    assert np.nanmax(np.abs(read_depth(tmp_path / "mm.png") - depth)) <= 0.5e-3 + 1e-12
    with pytest.raises(ValueError, match="does not fit 16 bits"):
        write_depth_png(tmp_path / "far.png", depth * 10, depth_scale=10_000.0)


def test_several_frames_one_mask_and_errors(scene, tmp_path):
    _, camera, depth = scene
    for name in ("neutral", "smile"):
        write_depth_png(tmp_path / f"{name}.png", depth)
    np.save(tmp_path / "mask.npy", np.ones((H, W), bool))
    frames = load_depth_frames([tmp_path / "neutral.png", tmp_path / "smile.png"], Intrinsics.from_camera(camera),
                               masks=[tmp_path / "mask.npy"], depth_range=(0.0, 0.7))
    assert [f.name for f in frames] == ["neutral", "smile"]
    assert len(frames[0].points) < int((depth > 0).sum())  # the box's far corners are beyond 0.7 m
    assert frames[0].points[:, 2].max() <= 0.7
    np.save(tmp_path / "small.npy", np.ones((4, 4)))
    with pytest.raises(ValueError, match=r"small.npy: mask of size \(4, 4\) but the depth map is \(48, 64\)"):
        load_depth_frame(tmp_path / "neutral.png", Intrinsics.from_camera(camera), mask=tmp_path / "small.npy")
    with pytest.raises(ValueError, match="only 0 pixels.*check depth_scale"):
        load_depth_frame(tmp_path / "neutral.png", Intrinsics.from_camera(camera), depth_scale=1.0,
                         depth_range=(0.0, 5.0))  # millimetres read as metres: all beyond 5 m
    with pytest.raises(FileNotFoundError, match="depth file not found"):
        read_depth(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="unsupported depth file type '.jpg'"):
        read_depth(tmp_path / "x.jpg")
    np.save(tmp_path / "rgb.npy", np.ones((4, 4, 3)))
    with pytest.raises(ValueError, match="rgb.npy: a depth map must have one channel"):
        read_depth(tmp_path / "rgb.npy")
    assert read_mask(tmp_path / "rgb.npy").all()


def test_intrinsics_and_the_y_up_frame():
    K = np.array([[500.0, 0, 319.5], [0, 510.0, 239.5], [0, 0, 1]])
    intr = Intrinsics.from_matrix(K)
    np.testing.assert_array_equal(intr.matrix(), K)
    points, _ = back_project(np.full((480, 640), 2.0), intr)
    top_left = points[0]
    assert top_left[0] < 0 and top_left[1] < 0  # image top-left: left of and above the axis (y down)
    up = camera_to_y_up(points)
    assert up[0, 1] > 0 and (up[:, 2] < 0).all()  # y up, looking along -z
    np.testing.assert_allclose(camera_to_y_up(up), points)
    with pytest.raises(ValueError, match="positive focal"):
        Intrinsics(0.0, 1.0, 0.0, 0.0)
