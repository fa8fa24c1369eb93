"""Render-based surface sampling of the evaluation protocol (CPU ray casting, no OpenGL).

The release does not sample the whole mesh surface: it renders the mesh from 10 cameras
and back-projects every pixel, so that only visible surface counts (a model of the mouth
interior is not punished). The protocol, in the nphm frame (= 4 x flame frame):

- cameras at the 12-point Fibonacci sphere minus its two poles (``+-y``), at distance
  ``0.6 * 4 = 2.4`` from the origin, looking at the origin with ``+y`` up;
- pinhole 960 x 1280 pixels (width x height, portrait), ``fx = fy = 2440``, principal point
  ``(cx, cy) = (480, 640)``; clip planes ``0.1 * 4`` and ``2.0 * 4``;
- per pixel the first surface hit and the normal of the hit face; hits whose face turns
  away from the camera (``cos(view ray, normal) >= -0.01``) are removed, so a mesh must be
  wound with outward normals;
- the union over all cameras is then cut at the neck plane and split into head and face
  samples, from each of which ``n_samples`` random samples are drawn.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import trimesh

from nphm.evaluation.face_region import FaceRegion
from nphm.rendering import Camera, MeshRayCaster, fibonacci_sphere, look_at

__all__ = [
    "RenderProtocol",
    "ScanSamples",
    "NoSamplesError",
    "evaluation_cameras",
    "render_samples",
    "sample_rendered",
    "draw_samples",
    "sample_scan",
]

#: nphm frame = FLAME frame x 4.
_NPHM_PER_FLAME = 4.0


class NoSamplesError(ValueError):
    """No visible, front-facing surface is left to sample (empty, inverted or misplaced mesh)."""


@dataclass(frozen=True)
class RenderProtocol:
    """Cameras of the render-based sampling; lengths in the nphm frame.

    ``scaled(f)`` shrinks the images (and focal lengths) by ``f`` for quick tests: the
    cameras see the same field of view with fewer pixels.
    """

    n_views: int = 10
    distance: float = 0.6 * _NPHM_PER_FLAME
    width: int = 960
    height: int = 1280
    focal: float = 2440.0
    cx: float = 480.0
    cy: float = 640.0
    near: float = 0.1 * _NPHM_PER_FLAME
    far: float = 2.0 * _NPHM_PER_FLAME
    backface_cos: float = -0.01

    def scaled(self, factor: float) -> "RenderProtocol":
        """Same cameras with images ``factor`` times as wide and high."""
        return replace(
            self,
            width=max(1, int(round(self.width * factor))),
            height=max(1, int(round(self.height * factor))),
            focal=self.focal * factor,
            cx=self.cx * factor,
            cy=self.cy * factor,
        )


@dataclass
class ScanSamples:
    """Evaluation samples of one mesh, nphm frame.

    Attributes:
        points, normals: (n, 3) samples of the whole head (below-neck part removed).
        points_face, normals_face: (n_face, 3) samples of the face region.
    """

    points: np.ndarray
    normals: np.ndarray
    points_face: np.ndarray
    normals_face: np.ndarray

    def as_dict(self) -> dict:
        return {
            "points": self.points,
            "normals": self.normals,
            "points_face": self.points_face,
            "normals_face": self.normals_face,
        }


def evaluation_cameras(protocol: RenderProtocol = RenderProtocol()) -> List[Camera]:
    """The protocol's cameras: Fibonacci sphere of ``n_views + 2`` points minus the poles."""
    centers = fibonacci_sphere(protocol.n_views + 2)[1:-1] * protocol.distance
    return [
        Camera(
            protocol.width,
            protocol.height,
            protocol.focal,
            protocol.focal,
            protocol.cx,
            protocol.cy,
            look_at(c, (0.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
            protocol.near,
            protocol.far,
        )
        for c in centers
    ]


def _mesh_arrays(mesh: trimesh.Trimesh) -> Tuple[np.ndarray, np.ndarray]:
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"not a triangle mesh: vertices {vertices.shape}, faces {faces.shape}")
    if not np.all(np.isfinite(vertices)):
        raise ValueError("mesh has non-finite vertex coordinates")
    return vertices, faces


def _front_facing(hits, camera: Camera, backface_cos: float) -> np.ndarray:
    """bool (n,): the hit face turns towards the camera (release: cos < -0.01)."""
    view = hits.points - camera.center
    view /= np.maximum(np.linalg.norm(view, axis=1, keepdims=True), 1e-300)
    return np.einsum("nd,nd->n", view, hits.normals) < backface_cos


def render_samples(
    mesh: trimesh.Trimesh, protocol: RenderProtocol = RenderProtocol()
) -> Tuple[np.ndarray, np.ndarray]:
    """All front-facing pixel hits of ``mesh`` over the protocol's cameras.

    Args:
        mesh: triangle mesh in the nphm frame, outward normals.
    Returns:
        points (n, 3) and unit face normals (n, 3), nphm frame, camera after camera.
    """
    vertices, faces = _mesh_arrays(mesh)
    caster = MeshRayCaster(vertices, faces)
    points, normals = [], []
    for camera in evaluation_cameras(protocol):
        hits = caster.cast(camera)
        front = _front_facing(hits, camera, protocol.backface_cos)
        points.append(hits.points[front])
        normals.append(hits.normals[front])
    return np.concatenate(points), np.concatenate(normals)


class _PixelPool:
    """Candidate rays: the union over cameras of one pixel rectangle each.

    Uniform random draws from the accepted hits of *all* candidates are obtained by
    casting only a uniformly random subset of the candidates (see :func:`_draw_accepted`),
    which is much cheaper than rendering every pixel when only a fraction is needed.
    """

    def __init__(self, caster: MeshRayCaster, cameras: List[Camera], windows: list) -> None:
        self.caster = caster
        self.cameras = cameras
        self.windows = [w if w is not None else (0, 0, 0, 0) for w in windows]
        sizes = [(r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in self.windows]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def cast(self, ids: np.ndarray, accept: "_Accept") -> Tuple[np.ndarray, np.ndarray]:
        """Cast the candidates ``ids`` (sorted) and keep the accepted hits."""
        points, normals = [], []
        bounds = np.searchsorted(ids, self.offsets)
        for view, camera in enumerate(self.cameras):
            local = ids[bounds[view] : bounds[view + 1]] - self.offsets[view]
            if len(local) == 0:
                continue
            r0, r1, c0, c1 = self.windows[view]
            rows, cols = np.divmod(local, c1 - c0)
            hits = self.caster.cast_pixels(camera, rows + r0, cols + c0)
            keep = accept(hits, camera)
            points.append(hits.points[keep])
            normals.append(hits.normals[keep])
        if not points:
            return np.zeros((0, 3)), np.zeros((0, 3))
        return np.concatenate(points), np.concatenate(normals)


_Accept = Callable[..., np.ndarray]


def _draw_accepted(
    pool: _PixelPool, accept: _Accept, n_samples: Optional[int], rng: np.random.Generator
) -> Tuple[np.ndarray, np.ndarray]:
    """``n_samples`` uniform random draws from the accepted hits of every candidate ray.

    Candidates are cast in rounds of independent random selections until enough accepted
    hits are found; the selection rule depends only on counts, so the accepted hits found
    are a uniformly random subset of all accepted hits, and a uniform subset of them is a
    uniform draw without replacement from the full set. If the whole pool has fewer
    accepted hits than requested, all of them are drawn from with replacement.
    """
    if n_samples is not None and n_samples < 1:
        raise ValueError(f"n_samples must be positive or None, got {n_samples}")
    n_total = len(pool)
    if n_samples is None or n_total == 0:
        points, normals = pool.cast(np.arange(n_total), accept)
        return points, normals
    used = np.zeros(n_total, dtype=bool)
    n_used = 0
    found_p, found_n = [], []
    n_found = 0
    rate = 0.5  # guess of the accepted fraction, refined after every round
    while n_found < n_samples and n_used < n_total:
        want = int((n_samples - n_found) / max(rate, 0.02) * 1.15) + 4096
        remaining = n_total - n_used
        if want >= 0.7 * remaining:
            ids = np.flatnonzero(~used)
        else:
            ids = np.flatnonzero((rng.random(n_total, dtype=np.float32) < want / remaining) & ~used)
        used[ids] = True
        n_used += len(ids)
        p, nrm = pool.cast(ids, accept)
        found_p.append(p)
        found_n.append(nrm)
        n_found += len(p)
        rate = n_found / n_used
    points = np.concatenate(found_p)
    normals = np.concatenate(found_n)
    if n_found == 0:
        return points, normals
    # Sorted: samples stay in rendering order (camera by camera, pixel rows), which keeps
    # the later nearest-neighbour queries cache friendly (about twice as fast).
    idx = np.sort(draw_samples(n_found, n_samples, rng))
    return points[idx], normals[idx]


def draw_samples(n_available: int, n_samples: Optional[int], rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n_samples`` random samples out of ``n_available``.

    Without replacement when there are enough, otherwise with replacement (like the
    release, which always draws with replacement). ``None`` keeps everything in order.
    """
    if n_samples is None:
        return np.arange(n_available)
    if n_available == 0:
        raise NoSamplesError("nothing to draw samples from")
    if n_available >= n_samples:
        return rng.choice(n_available, size=n_samples, replace=False)
    return rng.integers(0, n_available, size=n_samples)


def _no_samples_message(stage: str) -> str:
    return (
        f"no surface samples left after {stage}: the mesh is empty, outside the cameras' view, "
        "below the neck plane, or its faces point inwards (inverted winding)"
    )


def sample_rendered(
    mesh: trimesh.Trimesh,
    n_views: int = 10,
    n_samples: Optional[int] = 250_000,
    seed: int = 0,
    protocol: Optional[RenderProtocol] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Random render-based samples of a mesh, before neck cut and face selection.

    The samples are a uniform random draw (without replacement when possible) from the
    front-facing pixel hits of all cameras; only as many rays as needed are cast.

    Args:
        mesh: triangle mesh, nphm frame, outward normals.
        n_views: number of cameras (overrides ``protocol.n_views``).
        n_samples: number of samples to draw; ``None`` returns every front-facing hit.
        seed: random seed of the draw.
        protocol: cameras and images (default: the release's).
    Returns:
        points (n, 3) and unit face normals (n, 3), nphm frame.
    Raises:
        NoSamplesError: if the mesh shows no front-facing surface to any camera.
    """
    protocol = replace(protocol or RenderProtocol(), n_views=n_views)
    vertices, faces = _mesh_arrays(mesh)
    caster = MeshRayCaster(vertices, faces)
    cameras = evaluation_cameras(protocol)
    pool = _PixelPool(caster, cameras, [caster.pixel_window(c) for c in cameras])

    def accept(hits, camera):
        return _front_facing(hits, camera, protocol.backface_cos)

    points, normals = _draw_accepted(pool, accept, n_samples, np.random.default_rng(seed))
    if len(points) == 0:
        raise NoSamplesError(_no_samples_message("rendering"))
    return points, normals


def sample_scan(
    mesh: trimesh.Trimesh,
    keep_mask: Callable[[np.ndarray], np.ndarray],
    face_region: "FaceRegion",
    n_samples: Optional[int] = 250_000,
    seed: Union[int, Sequence[int], np.random.Generator] = 0,
    protocol: RenderProtocol = RenderProtocol(),
) -> ScanSamples:
    """The full sampling protocol for one mesh (prediction or ground truth).

    Head samples are uniform draws from the front-facing hits above the neck plane; face
    samples are independent uniform draws from those hits that lie in the face region.

    Args:
        mesh: triangle mesh, nphm frame, outward normals.
        keep_mask: points (N, 3) -> bool (N,), True above the neck plane (neck cut).
        face_region: the scan's :class:`~nphm.evaluation.face_region.FaceRegion`.
        n_samples: samples drawn for the head and for the face; None = all hits.
        seed: random seed (an int or a sequence of ints, e.g. ``[seed, subject, expression]``), or a
            generator (used as is, e.g. :func:`nphm.utils.seeding.item_generator`).
        protocol: cameras and images.
    Returns:
        :class:`ScanSamples`, nphm frame.
    Raises:
        NoSamplesError: if no head or no face sample is left.
    """
    vertices, faces = _mesh_arrays(mesh)
    caster = MeshRayCaster(vertices, faces)
    cameras = evaluation_cameras(protocol)
    rng = np.random.default_rng(seed)

    def accept_head(hits, camera):
        ok = _front_facing(hits, camera, protocol.backface_cos)
        ok[ok] = np.asarray(keep_mask(hits.points[ok]), dtype=bool)
        return ok

    def accept_face(hits, camera):
        ok = accept_head(hits, camera)
        ok[ok] = face_region.contains(hits.points[ok])
        return ok

    head_windows = [caster.pixel_window(c) for c in cameras]
    head_pool = _PixelPool(caster, cameras, head_windows)
    points, normals = _draw_accepted(head_pool, accept_head, n_samples, rng)
    if len(points) == 0:
        raise NoSamplesError(_no_samples_message("rendering and the neck cut"))
    # Face points lie within max_distance of a face-region vertex: only those pixels can see them.
    face_windows = [
        _intersect_windows(w, caster.pixel_window(c, points=face_region.vertices, radius=face_region.max_distance))
        for c, w in zip(cameras, head_windows)
    ]
    face_pool = _PixelPool(caster, cameras, face_windows)
    points_face, normals_face = _draw_accepted(face_pool, accept_face, n_samples, rng)
    if len(points_face) == 0:
        raise NoSamplesError(_no_samples_message("the face-region selection"))
    return ScanSamples(points, normals, points_face, normals_face)


def _intersect_windows(a, b):
    if a is None or b is None:
        return None
    r0, r1 = max(a[0], b[0]), min(a[1], b[1])
    c0, c1 = max(a[2], b[2]), min(a[3], b[3])
    if r0 >= r1 or c0 >= c1:
        return None
    return r0, r1, c0, c1
