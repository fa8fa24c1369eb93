"""What a scanner sees of an ICT head: the visible outer surface, finer, noisy, cut at the neck.

From the posed (and haired) model mesh, nphm frame:

1. **visibility**: a ring rig of cameras around and above the head (:class:`ScannerRig`, turned
   and tilted at random per scan) casts one ray at the centroid of every triangle facing it
   (``nphm.rendering`` ray casting); a triangle counts as seen by a camera when that ray hits
   it first and it faces the camera at more than a grazing angle. Triangles seen by at least
   two cameras (a structured-light / stereo scanner needs two views) are kept: the outer skin
   and hair, the eyeballs in the eye openings and, with the mouth open, the lips' insides,
   teeth, gums and tongue. Concave and downward-facing places (under the chin, inside the
   nostrils and ears, the mouth corners) lose triangles, as real scans do;
2. **finer surface**: one Loop subdivision step of the kept triangles (4 fine per coarse);
3. **noise** along the vertex normals: a smooth random field of std :data:`NOISE_STD` (0.25 mm)
   plus a little white noise (:func:`nphm.data.synthetic.scan.scanner_noise`);
4. **neck cut**: fine triangles not entirely above the throat plane (plus a margin) are dropped,
   so no scan vertex lies below the plane.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import trimesh

from nphm.data.synthetic.ict.subdivision import LoopSubdivision
from nphm.data.synthetic.scan import scanner_noise
from nphm.data.synthetic.template import vertex_normals
from nphm.rendering import Camera, MeshRayCaster, look_at

#: noise along the normals (nphm units; 0.001 = 0.25 mm)
NOISE_STD = 0.001
#: fine vertices must lie this far above the throat plane (nphm units; 0.001 = 0.25 mm)
NECK_MARGIN = 0.001


@dataclass(frozen=True)
class ScannerRig:
    """Cameras on rings around the head, looking at ``centre`` (nphm frame).

    Attributes:
        rings: ((elevation in degrees, number of cameras), ...) from low to high.
        distance: camera distance from ``centre`` (nphm units; 2.4 = 60 cm).
        centre: (3,) point the cameras look at.
        jitter: random tilt of the whole rig per scan, degrees (elevation), and a random turn.
        min_cos: a triangle is seen only when ``cos(normal, direction to the camera) > min_cos``.
        min_views: cameras that must see a triangle.
        front_z: inner parts (mouth, teeth, eyeballs) are only tested from cameras whose
            direction from ``centre`` has a z component above this (they face forwards).
        focal: focal length in pixels of the virtual cameras (rays pass within ~1/(2 focal)
            radians of the triangle centroids; the images are never allocated).
    """

    rings: Tuple[Tuple[float, int], ...] = ((8.0, 10), (38.0, 10), (70.0, 4))
    distance: float = 2.4
    centre: Tuple[float, float, float] = (0.0, 0.0, -0.12)
    jitter: float = 4.0
    min_cos: float = 0.3
    min_views: int = 2
    front_z: float = 0.3
    focal: float = 20000.0

    def cameras(self, rng: np.random.Generator) -> List[Camera]:
        """The rig's cameras for one scan (turned by a random azimuth, tilted by +-jitter)."""
        turn = rng.uniform(0.0, 2.0 * np.pi)
        tilt = rng.uniform(-self.jitter, self.jitter)
        centre = np.asarray(self.centre, dtype=np.float64)
        size = int(2 * self.focal)  # +-45 degrees: the whole head at any distance above ~1 unit
        cams = []
        for elevation, n in self.rings:
            el = np.radians(elevation + tilt)
            az = turn + 2.0 * np.pi * np.arange(n) / n
            dirs = np.stack([np.cos(el) * np.sin(az), np.full(n, np.sin(el)), np.cos(el) * np.cos(az)], axis=1)
            for d in dirs:
                cams.append(Camera(width=size, height=size, fx=self.focal, fy=self.focal, cx=size / 2, cy=size / 2,
                                   cam_to_world=look_at(centre + self.distance * d, centre)))
        return cams


def _seen_by(caster: MeshRayCaster, camera: Camera, centroids: np.ndarray, normals: np.ndarray,
             min_cos: float, candidates: np.ndarray) -> np.ndarray:
    """Indices (n,) of the faces among ``candidates`` (m,) indices whose centroid ray from
    ``camera`` hits them first, facing the camera at ``cos > min_cos``."""
    to_cam = camera.center - centroids[candidates]
    cos_dist = np.einsum("fd,fd->f", normals[candidates], to_cam)
    facing = candidates[(cos_dist > 0.0) & (cos_dist ** 2 > min_cos ** 2 * np.einsum("fd,fd->f", to_cam, to_cam))]
    if len(facing) == 0:
        return facing
    uv, depth = camera.project(centroids[facing])
    cols, rows = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
    key = rows * camera.width + cols
    order = np.argsort(key, kind="stable")
    facing, key, depth = facing[order], key[order], depth[order]
    hits = caster.cast_pixels(camera, rows[order], cols[order])
    hit_key = hits.pixels[:, 0] * camera.width + hits.pixels[:, 1]
    if len(hits) == 0:
        return facing[:0]
    # hits come back in the order of the rays that hit; identical rays (same pixel) give identical hits
    at = np.minimum(np.searchsorted(hit_key, key), len(hit_key) - 1)
    ok = (hit_key[at] == key) & ((hits.face_ids[at] == facing) | (np.abs(hits.depth[at] - depth) < 1e-4))
    return facing[ok]


def _through_openings(camera: Camera, points: np.ndarray, rims: Sequence[np.ndarray], margin: float = 8.0
                      ) -> np.ndarray:
    """Bool (n,): ``points`` (n, 3) whose image lies inside the image bounding box (plus
    ``margin`` pixels) of one of the ``rims`` (each (k, 3), an opening's rim)."""
    uv, _ = camera.project(points)
    inside = np.zeros(len(points), dtype=bool)
    for rim in rims:
        ruv, _ = camera.project(rim)
        lo, hi = ruv.min(axis=0) - margin, ruv.max(axis=0) + margin
        inside |= ((uv >= lo) & (uv <= hi)).all(axis=1)
    return inside


def visible_faces(vertices: np.ndarray, faces: np.ndarray, cameras: List[Camera], rig: ScannerRig,
                  candidates: np.ndarray, inner: np.ndarray, openings: Sequence[np.ndarray] = ()) -> np.ndarray:
    """Bool (F,): faces of the mesh (``vertices`` (V, 3), ``faces`` (F, 3)) seen by at least
    ``rig.min_views`` of ``cameras``, among the ``candidates`` (F,) bool (see :class:`ScannerRig`).

    ``inner`` (F,) bool faces lie inside the head and can only be seen through the
    ``openings`` (vertex indices of the rims of the skin's openings): they are tested from the
    rig's front cameras only, and only where they appear within an opening's image bounding
    box (a conservative test when the skin encloses them but for the openings). Cameras are
    taken in order and a face stops casting rays once it has ``min_views`` views."""
    tri = np.asarray(vertices, dtype=np.float64)[faces]
    centroids = tri.mean(axis=1)
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)
    caster = MeshRayCaster(vertices, faces)
    views = np.zeros(len(faces), dtype=np.int64)
    centre = np.asarray(rig.centre, dtype=np.float64)
    for cam in cameras:
        todo = candidates & (views < rig.min_views)
        if (cam.center - centre)[2] > rig.front_z * np.linalg.norm(cam.center - centre):
            rims = [vertices[r] for r in openings]
            todo[todo & inner] = _through_openings(cam, centroids[todo & inner], rims)
        else:
            todo &= ~inner
        views[_seen_by(caster, cam, centroids, normals, rig.min_cos, np.flatnonzero(todo))] += 1
    return views >= rig.min_views


def compact(vertices: np.ndarray, faces: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Drop the vertices no face uses: ``(vertices (n, 3), faces renumbered)``."""
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.ravel()] = True
    index = np.cumsum(used) - 1
    return vertices[used], index[faces]


def scan_mesh(vertices: np.ndarray, faces: np.ndarray, inner: np.ndarray, openings: Sequence[np.ndarray],
              subdivision: LoopSubdivision, plane: Tuple[np.ndarray, np.ndarray], rng: np.random.Generator,
              rig: ScannerRig = ScannerRig(), noise_std: float = NOISE_STD) -> trimesh.Trimesh:
    """The scan (nphm frame) of the posed union mesh (``vertices`` (V, 3), ``faces`` (F, 3)).

    Args:
        inner: (F,) bool faces inside the head (mouth, teeth, eyeballs): seen from the front only,
            through the ``openings`` (rim vertex indices, see :func:`visible_faces`).
        subdivision: the Loop step of ``faces``.
        plane: ``(origin (3,), unit normal (3,))`` of the neck cut; the positive side is kept.
        rng: the scan's random stream (rig turn and tilt, noise).
    """
    origin, normal = plane
    # faces entirely below the cut cannot reach the scan: skip their rays
    candidates = ((vertices[faces] - origin) @ normal > 0.0).any(axis=1)
    keep = visible_faces(vertices, faces, rig.cameras(rng), rig, candidates, inner, openings)
    fine = subdivision.apply(vertices)
    fine_faces = subdivision.faces.reshape(-1, 4, 3)[keep].reshape(-1, 3)
    points, fine_faces = compact(fine, fine_faces)
    normals = vertex_normals(points, fine_faces)
    noisy = points + normals * scanner_noise(points, rng, noise_std)[:, None]
    above = (noisy - origin) @ normal > NECK_MARGIN
    noisy, fine_faces = compact(noisy, fine_faces[above[fine_faces].all(axis=1)])
    return trimesh.Trimesh(noisy, fine_faces, process=False)
