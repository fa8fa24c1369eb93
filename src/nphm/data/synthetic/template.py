"""Fixed-topology templates of the synthetic heads: a ray family, its row parameterisation
and the three grids (registration, FLAME-like, scan).

Parameterisation. A surface point is addressed by ``(u, s)``: ``u`` is the azimuth around
the vertical axis (0 = front, +pi/2 = the subject's left, +x) and ``s`` in [0, 1] runs from
the top of the head (s = 0, a pole) down to the bottom of the neck (s = 1, an open
boundary). ``(u, s)`` selects a ray; the surface point is the last exit of that ray from the
implicit head of :mod:`nphm.data.synthetic.shape`, minus an inward offset inside the mouth.

Rays are the normals of a capsule of radius 0 whose axis runs from ``AXIS_TOP`` to
``AXIS_BOTTOM``: a fan from the top point (cranium), horizontal rays from the segment
(face, ears) and a fan from the bottom point (under the chin, neck). Two such rays never
meet outside the axis, so every surface without the mouth pocket is an embedded radial
graph and identity changes can never fold a mesh.

Mouth. Around the mouth line (a horizontal ray plane, ``shape.MOUTH_Y``) a band of rows
``|s - s_m| <= BAND`` is compressed in the mouth columns so that its two edges - the inner
edges of the upper and lower lip - nearly touch (~0.8 mm), and its interior is pushed inward
along the rays into a thin pocket: two sheets running back from the lips, joined by a back
wall at full depth. Opening the jaw rotates the lower sheet and stretches the wall, which
reveals a mouth cavity without any change of topology or any face turning over.

Rows are spread evenly by the arc length of the template head (measured once), with denser
rows on the face; columns are denser at the front (``column_warp``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from nphm.data.synthetic.expression import ExpressionBasis, build_basis
from nphm.data.synthetic.implicit import smoothstep
from nphm.data.synthetic.shape import MOUTH_Y, IdentityParams, head_sdf, identity_warp

AXIS_TOP = np.array([0.0, 0.10, -0.05])
AXIS_BOTTOM = np.array([0.0, -0.30, -0.05])
#: polar angle (from +y) of the last ray of the bottom fan, i.e. of the neck boundary
PHI_MAX = np.deg2rad(152.0)
#: profile parameter tau: [0, TAU_A] top fan, [TAU_A, TAU_B] axis segment, [TAU_B, 1] bottom fan
TAU_A, TAU_B = 0.4, 0.6
#: half-width (in s) of the mouth band, half-width in u of the mouth, pocket depth, and the
#: fraction of the band left open between the lips of a closed mouth (gap ~0.8 mm)
BAND = 0.02
MOUTH_HALF_ANGLE = 0.28
POCKET_DEPTH = 0.07
LIP_GAP_FRACTION = 0.012
#: |w| < POCKET_WALL is the back wall of the pocket (full depth); opening the jaw stretches
#: the wall vertically, so its faces keep facing forward instead of folding over
POCKET_WALL = 0.3
#: fraction of the band's row index range given to the wall rows
WALL_ROW_FRACTION = 0.35
#: the jaw weight goes from 0 to 1 within |w| < JAW_SPLIT, well inside the wall, so that the
#: two sheets of the pocket move rigidly with their lip
JAW_SPLIT = 0.2
RAY_LENGTH = 0.8


# ----------------------------------------------------------------------------- rays
def profile_rays(u: np.ndarray, tau: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Ray origins and unit directions (N, 3) for azimuth ``u`` (N,) and profile ``tau`` (N,)."""
    u = np.asarray(u, dtype=np.float64)
    tau = np.asarray(tau, dtype=np.float64)
    top = tau < TAU_A
    bottom = tau > TAU_B
    phi = np.full_like(tau, np.pi / 2)
    phi[top] = tau[top] / TAU_A * (np.pi / 2)
    phi[bottom] = np.pi / 2 + (tau[bottom] - TAU_B) / (1.0 - TAU_B) * (PHI_MAX - np.pi / 2)
    along = np.clip((tau - TAU_A) / (TAU_B - TAU_A), 0.0, 1.0)
    origins = AXIS_TOP + along[:, None] * (AXIS_BOTTOM - AXIS_TOP)
    dirs = np.stack([np.sin(phi) * np.sin(u), np.cos(phi), np.sin(phi) * np.cos(u)], axis=-1)
    return origins, dirs


def cast_last_exit(origins: np.ndarray, dirs: np.ndarray, sdf: Callable[[np.ndarray], np.ndarray],
                   start: Optional[np.ndarray] = None, max_step: float = 0.03, min_step: float = 0.004,
                   tol: float = 2e-5, n_bisect: int = 10, max_iter: int = 400) -> np.ndarray:
    """Distance (N,) along each ray to its last exit from the solid ``sdf < 0``.

    Marches from ``start`` (N,) (default ``RAY_LENGTH``; rays whose start is inside the head
    fall back to ``RAY_LENGTH``) towards
    the origin with steps ``clip(0.9 * sdf, min_step, max_step)`` - the step cap keeps thin
    parts (ears) from being jumped over - and refines an overshoot by bisection.
    """
    n = len(origins)
    r = np.full(n, RAY_LENGTH) if start is None else np.minimum(np.asarray(start, dtype=np.float64), RAY_LENGTH)
    f = sdf(origins + r[:, None] * dirs)
    restart = np.flatnonzero(f <= 0)
    if len(restart):  # a start inside the head: start those rays at the full length instead
        r[restart] = RAY_LENGTH
        f[restart] = sdf(origins[restart] + RAY_LENGTH * dirs[restart])
        if (f[restart] <= 0).any():
            raise RuntimeError("synthetic head: the head reaches beyond the ray length")
    prev = r.copy()
    active = np.flatnonzero(f > tol)
    for _ in range(max_iter):
        if not len(active):
            break
        prev[active] = r[active]
        r[active] -= np.clip(0.9 * f[active], min_step, max_step)
        if (r[active] <= 0).any():
            raise RuntimeError("synthetic head: a ray found no surface")
        f[active] = sdf(origins[active] + r[active, None] * dirs[active])
        active = active[f[active] > tol]
    else:
        raise RuntimeError("synthetic head: ray marching did not converge")
    # overshoots (f < 0): the exit lies in [r, prev]
    over = np.flatnonzero(f < 0)
    if len(over):
        a, b = r[over], prev[over]
        o, d = origins[over], dirs[over]
        for _ in range(n_bisect):
            mid = 0.5 * (a + b)
            inside = sdf(o + mid[:, None] * d) < 0
            a = np.where(inside, mid, a)
            b = np.where(inside, b, mid)
        r[over] = 0.5 * (a + b)
    return r


# ----------------------------------------------------------------------------- mouth band
def mouth_compression(u: np.ndarray) -> np.ndarray:
    """Factor (N,) by which the mouth band is compressed in column ``u``: LIP_GAP_FRACTION in
    the mouth, rising to 1 (no compression) over the cheeks."""
    a = np.abs(np.angle(np.exp(1j * np.asarray(u))))
    return LIP_GAP_FRACTION + (1.0 - LIP_GAP_FRACTION) * smoothstep(a, MOUTH_HALF_ANGLE, MOUTH_HALF_ANGLE + 0.35)


def pocket_depth(u: np.ndarray) -> np.ndarray:
    """Depth (N,) of the mouth pocket in column ``u`` (0 outside the mouth)."""
    a = np.abs(np.angle(np.exp(1j * np.asarray(u))))
    return POCKET_DEPTH * np.clip(1.0 - (a / MOUTH_HALF_ANGLE) ** 2, 0.0, None) ** 1.5


def pocket_profile(w: np.ndarray) -> np.ndarray:
    """Relative depth (N,) in [0, 1] across the band: 1 on the back wall (|w| <= POCKET_WALL),
    falling quadratically to 0 at the lips (|w| = 1)."""
    x = np.clip((np.abs(w) - POCKET_WALL) / (1.0 - POCKET_WALL), 0.0, 1.0)
    return 1.0 - x * x


def band_row_coordinates(n_band: int) -> np.ndarray:
    """Band coordinates w (n_band,) of the band rows, from the upper lip edge (-1) to the lower
    one (+1): evenly spaced on the wall, denser towards the lips where the pocket curves."""
    if n_band < 2:
        raise ValueError("the mouth band needs at least two rows")
    omega = np.linspace(-1.0, 1.0, n_band)
    a = np.abs(omega)
    wall = a <= WALL_ROW_FRACTION
    w = np.where(wall, POCKET_WALL * a / WALL_ROW_FRACTION,
                 POCKET_WALL + (1.0 - POCKET_WALL)
                 * np.sin(0.5 * np.pi * (a - WALL_ROW_FRACTION) / (1.0 - WALL_ROW_FRACTION)))
    return np.sign(omega) * w


# ----------------------------------------------------------------------------- row mapping
@dataclass(frozen=True)
class RowMapping:
    """Monotone tables t <-> tau (t = normalised, density-weighted template arc length)."""

    tau: np.ndarray
    t: np.ndarray
    s_mouth: float

    def tau_of_t(self, t: np.ndarray) -> np.ndarray:
        return np.interp(t, self.t, self.tau)

    def t_of_s(self, s: np.ndarray, u: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Row coordinate ``s`` -> arc coordinate ``t`` (mouth band compressed in the mouth
        columns) and the band coordinate w = (s - s_mouth) / BAND clipped to [-1, 1]."""
        s = np.asarray(s, dtype=np.float64)
        c = mouth_compression(u)
        sm = self.s_mouth
        lo, hi = sm - BAND, sm + BAND
        lo_t, hi_t = sm - BAND * c, sm + BAND * c
        t = np.where(
            s < lo, s * lo_t / lo,
            np.where(s > hi, hi_t + (s - hi) * (1.0 - hi_t) / (1.0 - hi), sm + (s - sm) * c))
        w = np.clip((s - sm) / BAND, -1.0, 1.0)
        return t, w


def _compute_row_mapping() -> RowMapping:
    """Arc length of the template head along a few meridians, weighted towards the face."""
    tau = np.linspace(0.0, 1.0, 801)
    # the mean over many meridians: a single profile (e.g. the midline with the underside of
    # the nose) would bunch rows in height for all other columns
    meridians = np.linspace(0.0, np.pi, 9)
    u = np.repeat(meridians, len(tau))
    o, d = profile_rays(u, np.tile(tau, len(meridians)))
    pts = (o + cast_last_exit(o, d, _template_sdf)[:, None] * d).reshape(len(meridians), len(tau), 3)
    seg = np.linalg.norm(np.diff(pts, axis=1), axis=2).mean(axis=0)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    # denser rows on the face: extra weight over the axis segment and the chin
    density = 1.0 + 0.5 * smoothstep(tau, TAU_A - 0.08, TAU_A) * smoothstep(tau, TAU_B + 0.12, TAU_B + 0.02)
    dens_mid = 0.5 * (density[1:] + density[:-1])
    arc = np.concatenate([[0.0], np.cumsum(np.diff(arc) * dens_mid)])
    t = arc / arc[-1]
    tau_mouth = TAU_A + (AXIS_TOP[1] - MOUTH_Y) / (AXIS_TOP[1] - AXIS_BOTTOM[1]) * (TAU_B - TAU_A)
    return RowMapping(tau=tau, t=t, s_mouth=float(np.interp(tau_mouth, tau, t)))


def _template_sdf(points: np.ndarray) -> np.ndarray:
    return head_sdf(points, IdentityParams())


# ----------------------------------------------------------------------------- grids
@dataclass(frozen=True)
class GridSpec:
    """Sampling of the (u, s) domain into a triangle mesh.

    Attributes:
        n_columns: columns (even, for an exact mirror symmetry).
        n_rows: rows outside the mouth band (approximately; spread evenly in s).
        n_band: rows in the mouth band including its two edges (>= 2).
        column_warp: u = v - column_warp * sin(v) for uniform v; > 0 makes the front denser.
        column_phase: offset of the columns in units of a column (0 keeps x = 0 columns).
        mouth_hole: drop the faces between the two band rows inside the mouth (n_band == 2),
            giving a FLAME-like mouth opening instead of a pocket.
    """

    n_columns: int
    n_rows: int
    n_band: int
    column_warp: float = 0.0
    column_phase: float = 0.0
    mouth_hole: bool = False


@dataclass
class Grid:
    """A sampled grid. Vertex 0 is the top pole; rows follow top to bottom, each with
    ``n_columns`` vertices in column order.

    Attributes:
        u, s, t, w: (V,) azimuth, row coordinate, arc coordinate, band coordinate in [-1, 1].
        row: (V,) row index (0 = pole), col: (V,) column index (pole: 0).
        faces: (F, 3) int, outward oriented.
        mirror: (V,) index of the mirror vertex (x -> -x); -1 where the grid has no exact mirror.
        origins, dirs: (V, 3) ray of each vertex; pocket: (V,) inward offset along the ray.
        row_s: (R,) s of each row (row 0 = pole).
    """

    spec: GridSpec
    u: np.ndarray
    s: np.ndarray
    t: np.ndarray
    w: np.ndarray
    row: np.ndarray
    col: np.ndarray
    faces: np.ndarray
    mirror: np.ndarray
    origins: np.ndarray
    dirs: np.ndarray
    pocket: np.ndarray
    row_s: np.ndarray
    band_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def n_vertices(self) -> int:
        return len(self.u)

    def vertex(self, row: int, col: int) -> int:
        """Index of the vertex in ``row`` (>= 1) and ``col``."""
        return 1 + (row - 1) * self.spec.n_columns + (col % self.spec.n_columns)


def _row_coordinates(spec: GridSpec, s_mouth: float) -> Tuple[np.ndarray, np.ndarray]:
    """s of every row below the pole and the indices (into that list) of the band rows."""
    lo, hi = s_mouth - BAND, s_mouth + BAND
    h = 1.0 / spec.n_rows
    n_top = max(2, int(round(lo / h)))
    n_bot = max(2, int(round((1.0 - hi) / h)))
    top = lo * np.arange(1, n_top) / n_top
    band = s_mouth + BAND * band_row_coordinates(spec.n_band)
    bottom = hi + (1.0 - hi) * np.arange(1, n_bot + 1) / n_bot
    rows = np.concatenate([top, band, bottom])
    band_idx = np.arange(len(top), len(top) + spec.n_band)
    return rows, band_idx


def _grid_faces(n_rows: int, n_cols: int, hole: Optional[np.ndarray] = None) -> np.ndarray:
    """Faces of a pole + ``n_rows`` x ``n_cols`` grid, outward for rows running downwards and
    columns running towards +x at the front. The quad diagonals are mirrored between the
    two halves so that the triangulation is symmetric under column j -> n_cols - j.

    ``hole``: optional bool (n_rows - 1, n_cols) of quads to leave out.
    """
    def vid(r, c):
        return 1 + r * n_cols + (c % n_cols)

    cols = np.arange(n_cols)
    fan = np.stack([np.zeros(n_cols, dtype=np.int64), vid(0, cols + 1), vid(0, cols)], axis=1)
    r, c = np.meshgrid(np.arange(n_rows - 1), cols, indexing="ij")
    r, c = r.ravel(), c.ravel()
    if hole is not None:
        keep = ~hole.ravel()
        r, c = r[keep], c[keep]
    a, b, cc, d = vid(r, c), vid(r, c + 1), vid(r + 1, c), vid(r + 1, c + 1)
    left = c < n_cols // 2
    # left half: diagonal b-cc; right half: diagonal a-d (mirror image)
    t1 = np.where(left[:, None], np.stack([a, cc, b], 1), np.stack([a, cc, d], 1))
    t2 = np.where(left[:, None], np.stack([b, cc, d], 1), np.stack([a, d, b], 1))
    return np.concatenate([fan, t1, t2]).astype(np.int64)


def build_grid(spec: GridSpec, rows: RowMapping) -> Grid:
    """Sample the (u, s) domain according to ``spec``."""
    if spec.n_columns % 2:
        raise ValueError("GridSpec.n_columns must be even")
    n_cols = spec.n_columns
    v = 2.0 * np.pi * (np.arange(n_cols) + spec.column_phase) / n_cols
    u_cols = v - spec.column_warp * np.sin(v)
    row_s, band_idx = _row_coordinates(spec, rows.s_mouth)
    n_rows = len(row_s)

    u = np.concatenate([[0.0], np.tile(u_cols, n_rows)])
    s = np.concatenate([[0.0], np.repeat(row_s, n_cols)])
    row = np.concatenate([[0], np.repeat(np.arange(1, n_rows + 1), n_cols)])
    col = np.concatenate([[0], np.tile(np.arange(n_cols), n_rows)])
    t, w = rows.t_of_s(s, u)
    w = np.where((s >= rows.s_mouth - BAND) & (s <= rows.s_mouth + BAND), w, np.sign(w))
    tau = rows.tau_of_t(t)
    origins, dirs = profile_rays(u, tau)
    pocket = pocket_depth(u) * pocket_profile(w)

    hole = None
    if spec.mouth_hole:
        if spec.n_band != 2:
            raise ValueError("mouth_hole needs exactly two band rows")
        hole = np.zeros((n_rows - 1, n_cols), dtype=bool)
        in_mouth = (np.abs(u_cols) < MOUTH_HALF_ANGLE) & (np.abs(np.roll(u_cols, -1)) < MOUTH_HALF_ANGLE)
        hole[band_idx[0], :] = in_mouth
    faces = _grid_faces(n_rows, n_cols, hole)

    if spec.column_phase == 0.0:
        mirror_cols = (n_cols - np.arange(n_cols)) % n_cols
    elif spec.column_phase == 0.5:
        mirror_cols = (n_cols - 1 - np.arange(n_cols)) % n_cols
    else:
        mirror_cols = None
    if mirror_cols is None:
        mirror = np.full(len(u), -1, dtype=np.int64)
    else:
        mirror = np.concatenate([[0], (1 + (row[1:] - 1) * n_cols + mirror_cols[col[1:]])])
    return Grid(spec=spec, u=u, s=s, t=t, w=w, row=row, col=col, faces=faces, mirror=mirror,
                origins=origins, dirs=dirs, pocket=pocket, row_s=np.concatenate([[0.0], row_s]),
                band_rows=band_idx + 1)


#: Registration topology (16,273 vertices), FLAME-like coarse topology (3,137 vertices, mouth
#: open as a hole) and the finer, differently triangulated scan sampling (40,829 vertices
#: before the neck cut).
REGISTRATION_SPEC = GridSpec(n_columns=144, n_rows=104, n_band=14, column_warp=0.45)
FLAME_SPEC = GridSpec(n_columns=64, n_rows=50, n_band=2, column_warp=0.3, mouth_hole=True)
SCAN_SPEC = GridSpec(n_columns=236, n_rows=160, n_band=20, column_warp=0.3, column_phase=0.5)


def ray_hits(grid: Grid, identity: IdentityParams, start: Optional[np.ndarray] = None) -> np.ndarray:
    """Distances (V,) along the rays of ``grid`` to the un-warped head of ``identity``
    (``start``: optional (V,) distances known to lie outside the head, to speed up marching)."""
    return cast_last_exit(grid.origins, grid.dirs, lambda x: head_sdf(x, identity), start=start)


def surface_points(grid: Grid, identity: IdentityParams, hits: Optional[np.ndarray] = None) -> np.ndarray:
    """Vertices (V, 3) of ``grid`` on the neutral head of ``identity`` (nphm frame).

    ``hits``: the ray distances of :func:`ray_hits` if already known.
    """
    r = ray_hits(grid, identity) if hits is None else hits
    raw = grid.origins + (r - grid.pocket)[:, None] * grid.dirs
    return identity_warp(raw, identity)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3) of a triangle mesh."""
    tri = vertices[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    corners = faces.ravel()
    normals = np.stack([np.bincount(corners, weights=np.repeat(face_n[:, k], 3), minlength=len(vertices))
                        for k in range(3)], axis=1)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


@dataclass
class Template:
    """Everything identity-independent: the row mapping, the grids, the template head
    (identity = ``IdentityParams()``, neutral) sampled on each grid (``rest[name]``, (V, 3))
    and the expression basis fields of each grid."""

    rows: RowMapping
    grids: Dict[str, Grid]
    rest: Dict[str, np.ndarray]
    basis: Dict[str, ExpressionBasis]
    #: ray distances (V,) of the template head on each grid (before the mouth pocket)
    hits: Dict[str, np.ndarray]


@lru_cache(maxsize=1)
def get_template() -> Template:
    """The template, built once per process (deterministic, a few seconds)."""
    rows = _compute_row_mapping()
    grids = {
        "registration": build_grid(REGISTRATION_SPEC, rows),
        "flame": build_grid(FLAME_SPEC, rows),
        "scan": build_grid(SCAN_SPEC, rows),
    }
    hits = {name: ray_hits(g, IdentityParams()) for name, g in grids.items()}
    rest = {name: surface_points(g, IdentityParams(), hits[name]) for name, g in grids.items()}
    basis = {
        name: build_basis(rest[name], g.dirs, g.u, g.s, rows.s_mouth, BAND * JAW_SPLIT, MOUTH_HALF_ANGLE)
        for name, g in grids.items()
    }
    return Template(rows=rows, grids=grids, rest=rest, basis=basis, hits=hits)
