"""Hair of the ICT heads: a smooth layer on the scalp, as an outward offset of the skin.

The ICT model has no hair. A hair style (:class:`HairStyle`, a few numbers per subject) gives
every skin vertex a thickness ``h >= 0`` (nphm units), a smooth nonlinear function of the
style and of the vertex's *template* position (the model's neutral, so the hair sits on the
same skin of every identity and moves with it):

- a hairline: height ``y_h(azimuth)`` around the head (forehead, temples with an optional
  recession, above the ears, down to the nape), a smooth periodic spline; a fringe lowers it
  over the forehead; the ears and the skin around them stay bare;
- a thickness that blends top / sides / back / front values by the direction from the head
  centre (the sides thinning towards the ears), modulated by a smooth random field (uneven
  volume) and an optional bun at the back;
- a falloff from 0 at the hairline to the full thickness over a width that grows with the
  thickness (2 - 2.5 times it, at least 7.5 mm; thickness slopes stay below ~0.75, so the layer
  never folds), by the distance into the hair region (:func:`hair_depth`).

The offset moves skin vertex ``i`` by ``h_i n_i`` with ``n`` the identity's neutral vertex
normals smoothed over ~4 cm (:data:`~nphm.data.synthetic.ict.topology.NORMAL_SMOOTHING_STEPS`),
so the registration keeps its topology and follows the hair surface.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Tuple

import numpy as np
import scipy.sparse as sp
from scipy.interpolate import CubicSpline
from scipy.sparse.csgraph import dijkstra

from nphm.data.synthetic.ict.topology import edge_graph, mesh_edges
from nphm.data.synthetic.implicit import smoothstep
from nphm.data.synthetic.template import vertex_normals

#: millimetres per nphm unit
MM = 250.0
#: centre of the cranium in the template (nphm frame): directions and azimuths are taken from it
HEAD_CENTRE = np.array([0.0, 0.12, -0.19])
#: base hairline: (azimuth in degrees, 0 = front, +90 = subject's left; height y, nphm frame)
#: forehead, temple, in front of the ear (sideburn), above the ear, behind the ear, nape
HAIRLINE_KNOTS: Tuple[Tuple[float, float], ...] = (
    (0.0, 0.385), (20.0, 0.375), (38.0, 0.345), (52.0, 0.29), (61.0, 0.17), (68.0, 0.03), (75.0, -0.02),
    (84.0, 0.06), (96.0, 0.16), (118.0, 0.10), (140.0, -0.12), (180.0, -0.22),
)
#: the bare ellipsoid around each ear (centre of the left ear, radii), template, nphm frame; the
#: ear of the template spans y -0.13..0.14 and z -0.40..-0.05 at |x| > 0.27
EAR_CENTRE = np.array([0.30, 0.02, -0.235])
EAR_RADII = np.array([0.12, 0.15, 0.13])
#: shortest hairline falloff (nphm units, 0.03 = 7.5 mm) and falloff width per unit thickness
#: at the front, top and sides and (gentler) at the back, where the nape is concave
MIN_FALLOFF, FALLOFF_FRONT, FALLOFF_BACK = 0.03, 2.0, 2.5
#: width of the band along the hairline where its distance is measured locally (nphm units)
BAND = 0.04
#: side thickness: a fraction SIDE_LOW of it at the height of the ears, all of it from
#: SIDE_TAPER[1] up (template y, nphm frame)
SIDE_LOW, SIDE_TAPER = 0.15, (0.05, 0.30)
#: styles: (name, probability, log-uniform range of the top thickness in mm)
STYLE_CLASSES: Tuple[Tuple[str, float, Tuple[float, float]], ...] = (
    ("bald", 0.08, (0.0, 0.6)),
    ("buzz", 0.17, (1.0, 3.0)),
    ("short", 0.35, (4.0, 14.0)),
    ("medium", 0.25, (12.0, 26.0)),
    ("voluminous", 0.15, (28.0, 55.0)),
)
#: number of smooth random lobes of the uneven-volume field
N_LOBES = 6


@dataclass(frozen=True)
class HairStyle:
    """One subject's hair (thicknesses in nphm units; 0.004 = 1 mm).

    Attributes:
        kind: style class (``STYLE_CLASSES``).
        top, side, back, front: thickness on the crown, above the ears, at the back, at the
            forehead hairline.
        recession: how far the temples recede (nphm units of hairline height).
        fringe: how far the hairline drops over the forehead (0 = none).
        fringe_width: half-width of the fringe in azimuth (degrees).
        bun: extra thickness of a bun at the back of the head (0 = none), at ``bun_height``
            (y, nphm frame).
        nape: shift of the nape hairline (positive = higher).
        lobes: (N_LOBES, 4) smooth random field: direction (3) and amplitude (1) per lobe.
    """

    kind: str
    top: float
    side: float
    back: float
    front: float
    recession: float = 0.0
    fringe: float = 0.0
    fringe_width: float = 40.0
    bun: float = 0.0
    bun_height: float = 0.2
    nape: float = 0.0
    lobes: np.ndarray = field(default_factory=lambda: np.zeros((N_LOBES, 4)))


def sample_hair_style(rng: np.random.Generator) -> HairStyle:
    """A random hair style (see ``STYLE_CLASSES`` for the mix of classes)."""
    names = [c[0] for c in STYLE_CLASSES]
    probs = np.array([c[1] for c in STYLE_CLASSES])
    k = int(rng.choice(len(names), p=probs / probs.sum()))
    kind, (lo, hi) = names[k], STYLE_CLASSES[k][2]
    top_mm = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if lo > 0 else rng.uniform(0.0, hi)
    directions = _unit(rng.standard_normal((N_LOBES, 3)))
    amplitudes = rng.normal(0.0, 1.0, (N_LOBES, 1))
    u = rng.uniform
    if kind in ("bald", "buzz"):
        side, back, front = top_mm * u(0.6, 1.0), top_mm * u(0.7, 1.0), top_mm * u(0.3, 0.8)
        recession = u(0.04, 0.12) if kind == "bald" else u(0.0, 0.05)
        return HairStyle(kind, top_mm / MM, side / MM, back / MM, front / MM, recession=recession,
                         nape=u(-0.02, 0.06), lobes=np.concatenate([directions, 0.1 * amplitudes], axis=1))
    side = top_mm * (u(0.6, 1.0) if kind == "voluminous" else u(0.3, 0.8))
    back = top_mm * u(0.6, 1.3)
    front = top_mm * u(0.3, 0.8)
    has_fringe = rng.random() < {"short": 0.2, "medium": 0.45, "voluminous": 0.35}[kind]
    fringe = u(0.05, 0.15) if has_fringe else 0.0
    if has_fringe:
        front = min(max(front, u(5.0, 10.0)), 15.0)
    bun = u(12.0, 28.0) / MM if (kind in ("medium", "voluminous") and rng.random() < 0.25) else 0.0
    return HairStyle(kind, top_mm / MM, side / MM, back / MM, front / MM,
                     recession=u(0.0, 0.06) if kind == "short" else u(0.0, 0.02), fringe=fringe,
                     fringe_width=u(30.0, 50.0), bun=bun, bun_height=u(0.05, 0.35), nape=u(-0.04, 0.04),
                     lobes=np.concatenate([directions, (0.25 if kind != "short" else 0.15) * amplitudes], axis=1))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@dataclass(frozen=True)
class ScalpCoordinates:
    """Style-independent coordinates of the template's skin vertices (all (V_skin,)).

    Attributes:
        direction: (V_skin, 3) unit direction from :data:`HEAD_CENTRE`.
        azimuth: degrees in (-180, 180], 0 = front, +90 = the subject's left (+x).
        height: template y (nphm frame).
        radius: horizontal distance from the vertical axis through :data:`HEAD_CENTRE`.
        ear_distance: approximate distance outside the bare ellipsoid of the nearer ear (nphm
            units, negative inside).
        graph: (V_skin, V_skin) csr, the skin's edges weighted by their template lengths.
    """

    direction: np.ndarray
    azimuth: np.ndarray
    height: np.ndarray
    radius: np.ndarray
    ear_distance: np.ndarray
    graph: sp.csr_matrix


def scalp_coordinates(template_skin: np.ndarray, skin_faces: np.ndarray) -> ScalpCoordinates:
    """:class:`ScalpCoordinates` of the template skin (vertices (V_skin, 3), nphm frame; faces
    (F_skin, 3))."""
    edges = mesh_edges(skin_faces)
    length = np.linalg.norm(template_skin[edges[:, 0]] - template_skin[edges[:, 1]], axis=1)
    graph = edge_graph(edges, length, len(template_skin))
    d = np.asarray(template_skin, dtype=np.float64) - HEAD_CENTRE
    q = (np.abs(template_skin) * np.array([1.0, 0.0, 0.0]) + template_skin * np.array([0.0, 1.0, 1.0]) - EAR_CENTRE)
    ear = (np.linalg.norm(q / EAR_RADII, axis=1) - 1.0) * EAR_RADII.min()
    return ScalpCoordinates(direction=_unit(d), azimuth=np.degrees(np.arctan2(d[:, 0], d[:, 2])),
                            height=template_skin[:, 1].copy(), radius=np.hypot(d[:, 0], d[:, 2]), ear_distance=ear,
                            graph=graph)


@lru_cache(maxsize=1)
def _base_hairline() -> CubicSpline:
    az = np.array([a for a, _ in HAIRLINE_KNOTS])
    y = np.array([h for _, h in HAIRLINE_KNOTS])
    az = np.concatenate([-az[:0:-1], az])  # mirrored: knots from -180 to 180 degrees
    y = np.concatenate([y[:0:-1], y])
    return CubicSpline(az, y, bc_type="periodic")


def hairline_height(style: HairStyle, azimuth: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Height y (nphm frame) of the hairline at ``azimuth`` (degrees) for ``style``, and its
    slope dy / d azimuth (per degree)."""
    az = np.asarray(azimuth, dtype=np.float64)
    a, sign = np.abs(az), np.sign(az)
    spline = _base_hairline()
    temple = np.exp(-((a - 45.0) / 18.0) ** 2)
    centre = np.exp(-(a / 20.0) ** 2)
    fringe = smoothstep(a, style.fringe_width + 15.0, style.fringe_width)
    nape = smoothstep(a, 110.0, 160.0)
    y = spline(az) + style.recession * (temple + 0.3 * centre) - style.fringe * fringe + style.nape * nape
    # slope of the same sum (the smoothstep terms by finite differences)
    step = 0.5
    d_fringe = (smoothstep(a + step, style.fringe_width + 15.0, style.fringe_width) - fringe) / step
    d_nape = (smoothstep(a + step, 110.0, 160.0) - nape) / step
    d_abs = (style.recession * (-2.0 * (a - 45.0) / 18.0 ** 2 * temple - 0.6 * a / 20.0 ** 2 * centre)
             - style.fringe * d_fringe + style.nape * d_nape)
    return y, spline(az, 1) + sign * d_abs


def hair_thickness(style: HairStyle, coords: ScalpCoordinates) -> np.ndarray:
    """Hair thickness (V_skin,) >= 0 of every skin vertex, nphm units."""
    u = coords.direction
    w = np.stack([np.maximum(u[:, 1], 0.0) ** 2, u[:, 0] ** 2, np.maximum(-u[:, 2], 0.0) ** 2,
                  np.maximum(u[:, 2], 0.0) ** 2], axis=1) + 1e-9
    # the sides thin out towards the ears and the sideburns (no flaps of hair above bare ears)
    side = style.side * (SIDE_LOW + (1.0 - SIDE_LOW) * smoothstep(coords.height, *SIDE_TAPER))
    values = np.stack([np.full_like(side, style.top), side, np.full_like(side, style.back),
                       np.full_like(side, style.front)], axis=1)
    t = (w * values).sum(axis=1) / w.sum(axis=1)
    lobes = np.asarray(style.lobes)
    field = (np.exp(4.0 * (u @ lobes[:, :3].T - 1.0)) * lobes[:, 3]).sum(axis=1)
    t = t * np.exp(np.clip(field, -1.5, 1.5))
    if style.bun > 0:
        centre = _unit(np.array([0.0, style.bun_height - HEAD_CENTRE[1], -0.4]))
        t = t + style.bun * np.exp(-((1.0 - u @ centre) / 0.06) ** 2 * 1.5)
    per_thickness = FALLOFF_FRONT + (FALLOFF_BACK - FALLOFF_FRONT) * smoothstep(np.abs(coords.azimuth), 110.0, 150.0)
    falloff = np.maximum(MIN_FALLOFF, per_thickness * t)
    return t * smoothstep(hair_depth(style, coords) / falloff, 0.0, 1.0)


def hair_depth(style: HairStyle, coords: ScalpCoordinates) -> np.ndarray:
    """Distance (V_skin,) of every skin vertex into the hair region (0 outside), nphm units.

    Near the hairline (within :data:`BAND`) it is the local distance above the hairline
    (perpendicular to it in the (arc length, height) chart) or away from the ears, whichever
    is smaller; further in, the shortest path along the skin's edges from that band, so the
    crown, where the azimuth turns fast, is simply far from every hairline.
    """
    y_h, slope = hairline_height(style, coords.azimuth)
    # dy / d arc length; not above the highest hairline, where the azimuth turns fast round the crown
    slope = slope * 180.0 / (np.pi * np.maximum(coords.radius, 0.1)) * smoothstep(coords.height, 0.46, 0.40)
    above = (coords.height - y_h) / np.sqrt(1.0 + slope ** 2)
    local = -np.logaddexp(-above / 0.01, -coords.ear_distance / 0.01) * 0.01  # smooth min
    n = len(local)
    band = np.flatnonzero(local < BAND)
    # a virtual source linked to the band vertices by their local distance (0 is "no edge": clamp)
    link = sp.csr_matrix((np.maximum(local[band], 1e-9), (np.zeros(len(band), dtype=np.int64), band)), shape=(1, n))
    graph = sp.bmat([[coords.graph, sp.csr_matrix((n, 1))], [link, sp.csr_matrix((1, 1))]], format="csr")
    depth = dijkstra(graph, directed=True, indices=n)[:n]
    return np.where(local > 0.0, depth, 0.0)


def smoothed_normals(skin_vertices: np.ndarray, skin_faces: np.ndarray, smoothing, steps: int) -> np.ndarray:
    """Unit vertex normals (V_skin, 3) of the skin, smoothed by ``steps`` products with the
    row-normalised ``smoothing`` matrix (V_skin, V_skin) and normalised."""
    n = vertex_normals(skin_vertices, skin_faces)
    for _ in range(steps):
        n = smoothing @ n
    return _unit(np.asarray(n) + 1e-12)


def hair_offsets(thickness: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """(V_skin, 3) hair offsets of the skin vertices: thickness (V_skin,) along the normals."""
    return np.asarray(thickness)[:, None] * normals
