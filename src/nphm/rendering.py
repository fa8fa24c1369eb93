"""Pinhole cameras and CPU ray casting of triangle meshes (no OpenGL).

Conventions
-----------
* Cameras follow OpenCV: in camera coordinates +x points right, +y down in the image and
  +z forward (into the scene). ``cam_to_world`` maps camera coordinates to world
  coordinates: ``x_world = R @ x_cam + eye`` with ``R = cam_to_world[:3, :3]``.
* Image coordinates are continuous: ``u = fx * x / z + cx`` (columns), ``v = fy * y / z + cy``
  (rows). Pixel ``(row, col)`` covers ``[col, col + 1) x [row, row + 1)``, so its centre is
  ``(u, v) = (col + 0.5, row + 0.5)`` and ``cx = width / 2`` is the exact image centre.
* Depth is z-depth (distance along the optical axis), and ``near`` / ``far`` clip planes
  act on it like OpenGL's clip planes.

Ray casting uses point-cloud-utils (Embree BVH). Measured behaviour of
``pcu.ray_mesh_intersection`` that this module relies on: a miss has face id ``-1`` and
``t = inf``; the barycentrics weight the face's vertices in order (``p = sum_i bc_i v_{f_i}``);
``t`` is in units of the (not necessarily unit) ray direction; ``near``/``far`` bound ``t``;
faces are hit from both sides; and ray origins must be given per ray (a single (3,) origin
gives wrong misses).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import point_cloud_utils as pcu

__all__ = ["look_at", "Camera", "RayHits", "MeshRayCaster", "cast_rays", "fibonacci_sphere"]

#: Rays cast per Embree call; bounds the temporary memory to ~100 MB whatever the resolution.
_CHUNK = 1 << 20


def _normalize(v: np.ndarray, axis: int = -1) -> np.ndarray:
    n = np.linalg.norm(v, axis=axis, keepdims=True)
    return v / np.maximum(n, 1e-300)


def look_at(
    eye: Sequence[float],
    target: Sequence[float] = (0.0, 0.0, 0.0),
    up: Sequence[float] = (0.0, 1.0, 0.0),
) -> np.ndarray:
    """Camera-to-world matrix of a camera at ``eye`` looking at ``target``.

    Args:
        eye: (3,) camera centre in world coordinates.
        target: (3,) point on the optical axis.
        up: (3,) world direction that appears upwards in the image (image -y).
    Returns:
        (4, 4) float64 camera-to-world matrix, OpenCV convention (+z forward, +y down).
        If ``up`` is parallel to the viewing direction another up vector is used.
    """
    eye = np.asarray(eye, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    up = np.asarray(up, dtype=np.float64)
    z = target - eye
    if np.linalg.norm(z) == 0:
        raise ValueError("look_at: eye and target coincide")
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9 * max(np.linalg.norm(up), 1e-300):
        # Looking along the up axis: pick the world axis least aligned with the view.
        alt = np.eye(3)[np.argmin(np.abs(z))]
        x = np.cross(z, alt)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, eye
    return m


@dataclass
class Camera:
    """Pinhole camera (OpenCV convention, see module docstring).

    Attributes:
        width, height: image size in pixels.
        fx, fy, cx, cy: intrinsics in pixels.
        cam_to_world: (4, 4) camera-to-world matrix (e.g. from :func:`look_at`).
        near, far: z-depth clip planes, in world units.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    cam_to_world: np.ndarray
    near: float = 0.0
    far: float = float("inf")

    def __post_init__(self) -> None:
        self.cam_to_world = np.asarray(self.cam_to_world, dtype=np.float64)
        if self.cam_to_world.shape != (4, 4):
            raise ValueError(f"cam_to_world must be (4, 4), got {self.cam_to_world.shape}")

    @property
    def rotation(self) -> np.ndarray:
        """(3, 3) camera-to-world rotation; columns are the camera x, y, z axes in world."""
        return self.cam_to_world[:3, :3]

    @property
    def center(self) -> np.ndarray:
        """(3,) camera centre in world coordinates."""
        return self.cam_to_world[:3, 3]

    def pixel_directions(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """World directions through the centres of pixels, scaled to unit z-depth.

        Args:
            rows, cols: (n,) integer pixel indices.
        Returns:
            (n, 3) directions ``d`` with ``(d @ R)[:, 2] == 1``, so ``eye + t * d`` has z-depth ``t``.
        """
        x = (np.asarray(cols, dtype=np.float64) + (0.5 - self.cx)) / self.fx
        y = (np.asarray(rows, dtype=np.float64) + (0.5 - self.cy)) / self.fy
        r = self.rotation
        return x[:, None] * r[:, 0] + y[:, None] * r[:, 1] + r[:, 2]

    def rays(self) -> Tuple[np.ndarray, np.ndarray]:
        """One ray per pixel through its centre, in row-major pixel order.

        Returns:
            origins (H*W, 3) (all the camera centre) and unit directions (H*W, 3), world frame;
            ray ``k`` belongs to pixel ``(k // width, k % width)``.
        """
        rows, cols = np.divmod(np.arange(self.height * self.width), self.width)
        dirs = _normalize(self.pixel_directions(rows, cols))
        origins = np.broadcast_to(self.center, dirs.shape).copy()
        return origins, dirs

    def project(self, points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Project world points into the image.

        Args:
            points: (n, 3) world points.
        Returns:
            uv (n, 2) continuous image coordinates (u = column axis, v = row axis) and
            z-depth (n,). Points behind the camera get non-finite or meaningless uv.
        """
        p_cam = (np.asarray(points, dtype=np.float64) - self.center) @ self.rotation
        z = p_cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.fx * p_cam[:, 0] / z + self.cx
            v = self.fy * p_cam[:, 1] / z + self.cy
        return np.stack([u, v], axis=-1), z


@dataclass
class RayHits:
    """First intersections of camera rays with a mesh (only pixels that hit within near/far).

    Attributes:
        points: (n, 3) hit points, world frame (exactly on the hit triangle).
        normals: (n, 3) unit normals of the hit faces (orientation from the face winding).
        face_ids: (n,) int64 index of the hit face.
        pixels: (n, 2) int64 ``(row, col)`` of the pixel whose centre ray hit.
        depth: (n,) z-depth of the hit point.
    """

    points: np.ndarray
    normals: np.ndarray
    face_ids: np.ndarray
    pixels: np.ndarray
    depth: np.ndarray

    def __len__(self) -> int:
        return int(self.points.shape[0])


class MeshRayCaster:
    """A mesh with a prebuilt BVH, for casting several cameras against the same mesh.

    Args:
        vertices: (V, 3) vertex positions, world frame.
        faces: (F, 3) vertex indices.
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray) -> None:
        self.vertices = np.ascontiguousarray(vertices, dtype=np.float64)
        self.faces = np.ascontiguousarray(faces, dtype=np.int32)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"vertices must be (V, 3), got {self.vertices.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"faces must be (F, 3), got {self.faces.shape}")
        if len(self.faces) and (self.faces.min() < 0 or self.faces.max() >= len(self.vertices)):
            raise ValueError("faces index vertices out of range")
        self._intersector = pcu.RayMeshIntersector(self.vertices, self.faces) if len(self.faces) else None

    def pixel_window(
        self, camera: Camera, points: Optional[np.ndarray] = None, radius: float = 0.0
    ) -> Optional[Tuple[int, int, int, int]]:
        """Pixel rectangle ``(r0, r1, c0, c1)`` (end-exclusive) whose rays can hit; None if empty.

        Rays outside the projected bounding rectangle of the vertices cannot hit the mesh,
        which usually removes most of the image. With ``points`` and ``radius`` the rectangle
        instead covers the projections of the balls of that radius around ``points``
        (world frame), e.g. a region of interest. Falls back to the full image when a
        vertex (or ball) reaches the camera plane.
        """
        full = (0, camera.height, 0, camera.width)
        pts = self.vertices if points is None else np.asarray(points, dtype=np.float64)
        if len(pts) == 0:
            return None
        uv, z = camera.project(pts)
        z_min = float(z.min())
        if z_min - radius <= 1e-12:
            return full
        # For q = c + d with |d| <= r: |q_x/q_z - c_x/c_z| <= r (1 + |c_x/c_z|) / (c_z - r),
        # so a ball projects within f r (1 + max |tan|) / (z_min - r) of its centre's image.
        tan_u = np.max(np.abs(uv[:, 0] - camera.cx)) / camera.fx
        tan_v = np.max(np.abs(uv[:, 1] - camera.cy)) / camera.fy
        pad_u = camera.fx * radius * (1.0 + tan_u) / (z_min - radius)
        pad_v = camera.fy * radius * (1.0 + tan_v) / (z_min - radius)
        umin, vmin = uv.min(axis=0) - (pad_u, pad_v)
        umax, vmax = uv.max(axis=0) + (pad_u, pad_v)
        # Pixel centres c + 0.5 inside [umin, umax], with one pixel of slack for rounding.
        c0 = max(int(np.floor(umin - 0.5)), 0)
        c1 = min(int(np.ceil(umax - 0.5)) + 1, camera.width)
        r0 = max(int(np.floor(vmin - 0.5)), 0)
        r1 = min(int(np.ceil(vmax - 0.5)) + 1, camera.height)
        if c0 >= c1 or r0 >= r1:
            return None
        return r0, r1, c0, c1

    def cast(self, camera: Camera) -> RayHits:
        """Cast one ray per pixel centre of ``camera``; see :func:`cast_rays`."""
        window = self.pixel_window(camera) if self._intersector is not None else None
        if window is None:
            return _empty_hits()
        r0, r1, c0, c1 = window
        rows, cols = np.divmod(np.arange((r1 - r0) * (c1 - c0)), c1 - c0)
        return self.cast_pixels(camera, rows + r0, cols + c0)

    def cast_pixels(self, camera: Camera, rows: np.ndarray, cols: np.ndarray) -> RayHits:
        """Cast the rays through the centres of the given pixels.

        Args:
            camera: the camera.
            rows, cols: (n,) integer pixel indices (need not lie inside the image).
        Returns:
            :class:`RayHits` of the rays that hit, in the given order.
        """
        rows = np.asarray(rows, dtype=np.int64).ravel()
        cols = np.asarray(cols, dtype=np.int64).ravel()
        if self._intersector is None or len(rows) == 0:
            return _empty_hits()
        fids, bcs, sel = [], [], []
        for start in range(0, len(rows), _CHUNK):
            r = rows[start : start + _CHUNK]
            c = cols[start : start + _CHUNK]
            # Unit z-depth directions make Embree's t the z-depth, so near/far are clip planes.
            dirs = camera.pixel_directions(r, c).astype(np.float32)
            origins = np.empty_like(dirs)
            origins[:] = camera.center
            fid, bc, _ = self._intersector.intersect_rays(origins, dirs, camera.near, camera.far)
            hit = np.flatnonzero(fid >= 0)
            fids.append(fid[hit].astype(np.int64))
            bcs.append(bc[hit].astype(np.float64))
            sel.append(hit + start)
        face_ids = np.concatenate(fids)
        bc = np.concatenate(bcs)
        sel = np.concatenate(sel)
        pixels = np.stack([rows[sel], cols[sel]], axis=-1)

        tri = self.vertices[self.faces[face_ids]]  # (n, 3, 3)
        normals = _normalize(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]))
        # Embree intersects in float32; redo the ray/plane intersection of the hit face in
        # float64 so that points lie on both the ray and the face plane to rounding error.
        dirs = camera.pixel_directions(pixels[:, 0], pixels[:, 1])
        denom = np.einsum("nd,nd->n", dirs, normals)
        t_plane = np.einsum("nd,nd->n", tri[:, 0] - camera.center, normals) / np.where(denom == 0, 1.0, denom)
        points = np.einsum("nk,nkd->nd", bc, tri)
        depth = (points - camera.center) @ camera.rotation[:, 2]
        # Keep the barycentric point where the plane is grazed (ill-conditioned there).
        exact = np.abs(t_plane - depth) <= 1e-4 * np.maximum(np.abs(depth), 1e-12)
        points[exact] = camera.center + t_plane[exact, None] * dirs[exact]
        depth[exact] = t_plane[exact]
        return RayHits(points=points, normals=normals, face_ids=face_ids, pixels=pixels, depth=depth)


def _empty_hits() -> RayHits:
    return RayHits(
        np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, np.int64), np.zeros((0, 2), np.int64), np.zeros(0)
    )


def cast_rays(camera: Camera, vertices: np.ndarray, faces: np.ndarray) -> RayHits:
    """Render a mesh by ray casting: the first hit of each pixel-centre ray.

    Args:
        camera: the pinhole camera (rays start at its centre; hits must have
            ``near <= z-depth <= far``).
        vertices: (V, 3) mesh vertices, same world frame as the camera.
        faces: (F, 3) triangle vertex indices.
    Returns:
        :class:`RayHits` for the pixels that hit, in row-major pixel order. Both sides of a
        face are hit (no culling); use the normals to find back faces.
    Memory stays bounded for any resolution (rays are cast in chunks). To cast several
    cameras against one mesh, build a :class:`MeshRayCaster` once.
    """
    return MeshRayCaster(vertices, faces).cast(camera)


def fibonacci_sphere(n: int) -> np.ndarray:
    """``n`` nearly uniform points on the unit sphere (golden-angle spiral).

    Point ``i`` has ``y = 1 - 2 i / (n - 1)`` (from the north pole ``+y`` to the south pole
    ``-y``) and azimuth ``i`` times the golden angle, ``x = cos``, ``z = sin``.

    Returns:
        (n, 3) float64 unit vectors.
    """
    if n < 1:
        raise ValueError("fibonacci_sphere needs n >= 1")
    if n == 1:
        return np.array([[0.0, 1.0, 0.0]])
    i = np.arange(n, dtype=np.float64)
    y = 1.0 - 2.0 * i / (n - 1)
    r = np.sqrt(np.clip(1.0 - y * y, 0.0, None))
    theta = np.pi * (np.sqrt(5.0) - 1.0) * i
    return np.stack([np.cos(theta) * r, y, np.sin(theta) * r], axis=-1)
