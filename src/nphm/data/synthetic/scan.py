"""Synthetic raw scans: the scan sampling of a posed head, cut below the neck, with noise,
and the per-scan similarity between the raw (millimetre) frame and the nphm frame."""
from __future__ import annotations

from typing import Tuple

import numpy as np
import trimesh
from scipy.ndimage import map_coordinates

from nphm.data.synthetic.template import Grid, vertex_normals

#: scanner noise along the normal (nphm units): a smooth random field of this standard
#: deviation plus white noise of a twentieth of it; 0.0006 = 0.15 mm
NOISE_STD = 0.0006
#: lattice spacing of the smooth noise field (nphm units, 0.04 = 10 mm)
NOISE_CELL = 0.04
#: nphm units per millimetre (1 unit = 250 mm)
MM_SCALE = 0.004


def cut_and_noise(vertices: np.ndarray, grid: Grid, rng: np.random.Generator,
                  noise_std: float = NOISE_STD) -> trimesh.Trimesh:
    """A scan mesh from the posed scan-grid vertices (V, 3) (nphm frame).

    The neck is cut open along a slightly wavy row line (rows at ``s`` beyond
    ~0.945-0.985 dropped, like the lower end of a real head scan) and every vertex moves
    along its normal by N(0, noise_std).
    """
    normals = vertex_normals(vertices, grid.faces)
    noisy = vertices + normals * scanner_noise(vertices, rng, noise_std)[:, None]
    s_cut = rng.uniform(0.955, 0.985) + 0.008 * np.cos(grid.u - rng.uniform(0.0, 2.0 * np.pi))
    keep = grid.s <= s_cut
    faces = grid.faces[keep[grid.faces].all(axis=1)]
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.ravel()] = True
    new_index = np.cumsum(used) - 1
    return trimesh.Trimesh(noisy[used], new_index[faces], process=False)


def scanner_noise(points: np.ndarray, rng: np.random.Generator, std: float = NOISE_STD) -> np.ndarray:
    """Noise values (N,) at ``points`` (N, 3): a smooth random field (cubic-spline
    interpolation of white noise on a lattice of spacing ``NOISE_CELL``) scaled to standard
    deviation ``std``, plus white noise of std / 20. Smooth noise keeps thin triangles from
    getting wildly tilted normals."""
    lo = points.min(axis=0) - 2 * NOISE_CELL
    shape = np.ceil((points.max(axis=0) - lo) / NOISE_CELL).astype(int) + 3
    lattice = rng.standard_normal(tuple(shape))
    coords = ((points - lo) / NOISE_CELL).T
    smooth = map_coordinates(lattice, coords, order=3, mode="nearest")
    smooth /= max(float(smooth.std()), 1e-12)
    return std * smooth + rng.normal(0.0, 0.05 * std, size=len(points))


def random_similarity(rng: np.random.Generator) -> Tuple[float, np.ndarray, np.ndarray]:
    """A raw-scan similarity (s, R (3, 3), t (3,)) with ``x_raw = (1/s) (x_nphm - t) @ R``:
    s ~ 0.004 (raw units are millimetres), R a rotation by up to ~10 degrees about a random
    axis, t a translation of a few centimetres (in nphm units)."""
    s = MM_SCALE * (1.0 + 0.01 * float(np.clip(rng.standard_normal(), -2.5, 2.5)))
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(0.0, 10.0))
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    rot = np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)
    t = rng.normal(0.0, 0.03, size=3)
    return float(s), rot, t
