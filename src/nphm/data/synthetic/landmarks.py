"""Template metadata of the synthetic heads: anchor and landmark vertex indices, face
regions and the neck (throat) plane, all chosen once on the template head.

Conventions (as in the NPHM release):

- 39 anchors: 16 symmetric pairs first, each as (right, left): the subject's right (-x) first,
  as in the release (its anchor 12 is landmark 36, the outer corner of the right eye), then
  7 anchors on the symmetry plane. Pair members are exact mirror vertices.
  Pair 15 (anchors 30, 31) sits on the back of the head, which a frontal view does not see.
- 68 landmarks in the iBUG-300W order (index 0 = the subject's right end of the jaw line,
  36 = outer corner of the subject's right eye, 48 = right mouth corner, ...).
- Throat plane: three FLAME-topology vertices, origin = first, normal =
  cross(v2 - v1, v3 - v1) pointing up; points with a positive side are kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Sequence, Tuple

import numpy as np

from nphm.data.synthetic.template import MOUTH_HALF_ANGLE, Grid, Template, get_template

#: (name, template position of the left member) of the 16 anchor pairs, in order.
ANCHOR_PAIRS: Tuple[Tuple[str, Tuple[float, float, float]], ...] = (
    ("mouth_corner", (0.094, -0.2, 0.255)),
    ("jaw_lower", (0.215, -0.2, 0.065)),
    ("cheek", (0.15, -0.1, 0.240)),
    ("nose_ala", (0.05, -0.085, 0.295)),
    ("cheekbone", (0.17, 0.02, 0.225)),
    ("eye_inner_corner", (0.047, 0.085, 0.265)),
    ("eye_outer_corner", (0.148, 0.085, 0.235)),
    ("brow_inner", (0.04, 0.15, 0.305)),
    ("brow_outer", (0.165, 0.16, 0.240)),
    ("temple", (0.255, 0.16, 0.115)),
    ("ear", (0.33, 0.0, -0.085)),
    ("ear_top", (0.3, 0.13, -0.105)),
    ("jaw_angle", (0.2, -0.26, -0.025)),
    ("chin_side", (0.075, -0.37, 0.265)),
    ("forehead_side", (0.15, 0.33, 0.215)),
    ("back_of_head", (0.18, 0.15, -0.415)),
)
#: (name, template position) of the 7 midline anchors, in order.
ANCHOR_MIDLINE: Tuple[Tuple[str, Tuple[float, float, float]], ...] = (
    ("chin", (0.0, -0.38, 0.285)),
    ("nose_tip", (0.0, -0.06, 0.360)),
    ("lower_lip", (0.0, -0.235, 0.305)),
    ("upper_lip", (0.0, -0.17, 0.315)),
    ("nasion", (0.0, 0.11, 0.275)),
    ("forehead", (0.0, 0.25, 0.295)),
    ("forehead_top", (0.0, 0.4, 0.185)),
)


@dataclass(frozen=True)
class TemplateMetadata:
    """Index tables and masks of the synthetic topologies.

    Attributes:
        anchor_indices: (39,) registration vertex indices.
        anchor_names: 39 names.
        landmark_indices_68: (68,) registration vertex indices.
        face_mask_registration: bool (V_reg,).
        face_region_flame: bool (V_flame,).
        throat_plane_flame: (3,) FLAME-topology vertex indices.
        upper_lip_inner / lower_lip_inner: registration vertices on the inner edges of the
            lips at the midline (their distance measures the mouth opening).
        back_of_head_registration: bool (V_reg,) vertices behind the ears (expressions
            never move them).
    """

    anchor_indices: np.ndarray
    anchor_names: Tuple[str, ...]
    landmark_indices_68: np.ndarray
    face_mask_registration: np.ndarray
    face_region_flame: np.ndarray
    throat_plane_flame: np.ndarray
    upper_lip_inner: int
    lower_lip_inner: int
    back_of_head_registration: np.ndarray


def _skin_candidates(grid: Grid) -> np.ndarray:
    """Vertices on the outer skin (not inside the mouth pocket)."""
    return np.flatnonzero(grid.pocket <= 1e-9)


def _snap(points: np.ndarray, rest: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Index (N,) of the candidate vertex nearest to each point (N, 3)."""
    d = np.linalg.norm(rest[candidates][None, :, :] - points[:, None, :], axis=-1)
    return candidates[np.argmin(d, axis=1)]


def _snap_left(points: Sequence[Sequence[float]], rest: np.ndarray, grid: Grid) -> np.ndarray:
    cand = _skin_candidates(grid)
    cand = cand[rest[cand, 0] > 1e-6]
    return _snap(np.asarray(points, dtype=np.float64), rest, cand)


def _snap_midline(points: Sequence[Sequence[float]], rest: np.ndarray, grid: Grid) -> np.ndarray:
    cand = _skin_candidates(grid)
    cand = cand[(grid.col[cand] == 0) | (grid.col[cand] == grid.spec.n_columns // 2) | (grid.row[cand] == 0)]
    return _snap(np.asarray(points, dtype=np.float64), rest, cand)


def _anchors(t: Template) -> Tuple[np.ndarray, Tuple[str, ...]]:
    grid, rest = t.grids["registration"], t.rest["registration"]
    left = _snap_left([p for _, p in ANCHOR_PAIRS], rest, grid)
    pairs = np.stack([grid.mirror[left], left], axis=1).ravel()
    mid = _snap_midline([p for _, p in ANCHOR_MIDLINE], rest, grid)
    names = []
    for name, _ in ANCHOR_PAIRS:
        names += [f"{name}_right", f"{name}_left"]
    names += [name for name, _ in ANCHOR_MIDLINE]
    return np.concatenate([pairs, mid]).astype(np.int64), tuple(names)


def _lip_edge(grid: Grid, upper: bool, u: float) -> int:
    """Registration vertex on the inner edge of the upper/lower lip in the column nearest ``u``."""
    row = grid.band_rows[0] if upper else grid.band_rows[-1]
    cols = np.arange(grid.spec.n_columns)
    u_cols = grid.u[grid.vertex(row, 0) + cols]
    col = int(np.argmin(np.abs(np.angle(np.exp(1j * (u_cols - u))))))
    return grid.vertex(row, col)


def _landmarks_68(t: Template) -> np.ndarray:
    """iBUG-68 landmark vertices: the subject's left half is placed, the right half mirrored."""
    grid, rest = t.grids["registration"], t.rest["registration"]
    idx = np.full(68, -1, dtype=np.int64)
    # left half (x > 0) with its iBUG index; right half = mirror partner
    left = {
        16: (0.27, 0.05, 0.075), 15: (0.265, -0.03, 0.085), 14: (0.25, -0.11, 0.085), 13: (0.225, -0.19, 0.085),
        12: (0.2, -0.26, 0.105), 11: (0.165, -0.32, 0.145), 10: (0.12, -0.37, 0.205), 9: (0.065, -0.405, 0.255),
        22: (0.035, 0.15, 0.305), 23: (0.07, 0.16, 0.295), 24: (0.105, 0.167, 0.280), 25: (0.14, 0.165, 0.260),
        26: (0.17, 0.155, 0.235),
        34: (0.018, -0.105, 0.315), 35: (0.04, -0.1, 0.300),
        42: (0.05, 0.085, 0.265), 43: (0.075, 0.1, 0.270), 44: (0.115, 0.1, 0.265), 45: (0.145, 0.085, 0.245),
        46: (0.115, 0.07, 0.260), 47: (0.075, 0.07, 0.265),
        53: (0.045, -0.18, 0.305), 52: (0.02, -0.172, 0.310), 55: (0.06, -0.22, 0.290), 56: (0.03, -0.23, 0.300),
    }
    keys = sorted(left)
    snapped = _snap_left([left[k] for k in keys], rest, grid)
    mirror_of = {16: 0, 15: 1, 14: 2, 13: 3, 12: 4, 11: 5, 10: 6, 9: 7, 22: 21, 23: 20, 24: 19, 25: 18,
                 26: 17, 34: 32, 35: 31, 42: 39, 43: 38, 44: 37, 45: 36, 46: 41, 47: 40, 53: 49, 52: 50,
                 55: 59, 56: 58}
    for k, v in zip(keys, snapped):
        idx[k] = v
        idx[mirror_of[k]] = grid.mirror[v]
    # midline landmarks
    mid = {8: (0.0, -0.415, 0.265), 27: (0.0, 0.11, 0.275), 28: (0.0, 0.05, 0.295), 29: (0.0, -0.005, 0.325),
           30: (0.0, -0.06, 0.360), 33: (0.0, -0.11, 0.315), 51: (0.0, -0.17, 0.315), 57: (0.0, -0.235, 0.305)}
    keys = sorted(mid)
    for k, v in zip(keys, _snap_midline([mid[k] for k in keys], rest, grid)):
        idx[k] = v
    # mouth corners and inner lip contour on the band edges
    idx[54] = _lip_edge(grid, True, MOUTH_HALF_ANGLE)
    idx[48] = grid.mirror[idx[54]]
    idx[64] = idx[54]
    idx[60] = idx[48]
    idx[62] = _lip_edge(grid, True, 0.0)
    idx[66] = _lip_edge(grid, False, 0.0)
    idx[63] = _lip_edge(grid, True, 0.5 * MOUTH_HALF_ANGLE)
    idx[61] = grid.mirror[idx[63]]
    idx[65] = _lip_edge(grid, False, 0.5 * MOUTH_HALF_ANGLE)
    idx[67] = grid.mirror[idx[65]]
    assert (idx >= 0).all()
    return idx


def _face_region(rest: np.ndarray, half_width: float, half_height: float, min_z: float) -> np.ndarray:
    x, y, z = rest[:, 0], rest[:, 1], rest[:, 2]
    return ((x / half_width) ** 2 + ((y + 0.03) / half_height) ** 2 < 1.0) & (z > min_z)


def _throat_plane(t: Template) -> np.ndarray:
    """Three FLAME-grid vertices: the throat under the chin (front), then two points at the
    back-sides of the neck, ordered so that the normal points up."""
    grid, rest = t.grids["flame"], t.rest["flame"]
    front = _nearest_row_vertex(grid, s=0.895, u=0.0)
    back_l = _nearest_row_vertex(grid, s=0.915, u=np.pi - 0.9)
    back_r = grid.mirror[back_l]
    v1, v2, v3 = rest[front], rest[back_l], rest[back_r]
    if np.cross(v2 - v1, v3 - v1)[1] < 0:
        back_l, back_r = back_r, back_l
    return np.array([front, back_l, back_r], dtype=np.int64)


def _nearest_row_vertex(grid: Grid, s: float, u: float) -> int:
    row = int(np.argmin(np.abs(grid.row_s - s)))
    row = max(row, 1)
    cols = np.arange(grid.spec.n_columns)
    u_cols = grid.u[grid.vertex(row, 0) + cols]
    col = int(np.argmin(np.abs(np.angle(np.exp(1j * (u_cols - u))))))
    return grid.vertex(row, col)


@lru_cache(maxsize=1)
def get_metadata() -> TemplateMetadata:
    """Metadata of the synthetic template (built once per process)."""
    t = get_template()
    anchors, names = _anchors(t)
    reg = t.rest["registration"]
    grid = t.grids["registration"]
    return TemplateMetadata(
        anchor_indices=anchors,
        anchor_names=names,
        landmark_indices_68=_landmarks_68(t),
        face_mask_registration=_face_region(reg, 0.25, 0.42, 0.02),
        face_region_flame=_face_region(t.rest["flame"], 0.22, 0.40, 0.08),
        throat_plane_flame=_throat_plane(t),
        upper_lip_inner=_lip_edge(grid, True, 0.0),
        lower_lip_inner=_lip_edge(grid, False, 0.0),
        back_of_head_registration=reg[:, 2] < -0.15,
    )


def metadata_tables() -> Dict[str, List[int]]:
    """The index tables as plain lists (for the dataset description)."""
    m = get_metadata()
    return {
        "anchor_vertex_indices_registration": m.anchor_indices.tolist(),
        "landmark_vertex_indices_registration_68": m.landmark_indices_68.tolist(),
        "throat_plane_flame_vertex_indices": m.throat_plane_flame.tolist(),
    }
