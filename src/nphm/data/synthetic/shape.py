"""Identity model of the synthetic heads: an implicit head built from smooth primitives plus
a smooth, bijective proportion warp.

Frame: the nphm frame (FLAME x 4): +y up, +z forward (the face looks to +z), +x to the
subject's left; 1 unit = 250 mm. The template head is 0.59 wide at the cranium (0.69 with
the ears, ~170 mm), 0.9 tall from chin (y ~ -0.41) to vertex (y = 0.49) plus a neck down to
y ~ -0.72; its nose tip is at z ~ 0.356. Over the sampled identities the part above y = -0.6
stays inside the release's preview box [-0.4, -0.6, -0.7]..[0.4, 0.6, 0.5] and the part above
y = -0.5 inside its fitting grid [-0.55, -0.5, -0.95]..[0.55, 0.75, 0.4].

Every identity is mirror symmetric (x -> -x). The implicit surface ``head_sdf`` is sampled
by the template's ray family (``template.py``); ``identity_warp`` then changes proportions
without changing which surface point a template vertex corresponds to.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Dict

import numpy as np

from nphm.data.synthetic.implicit import (
    capsule,
    ellipsoid,
    rotation_xyz,
    smooth_subtract,
    smooth_union,
    smoothstep,
    sphere,
    vertical_elliptic_cylinder,
)

#: Height of the mouth line (the lips meet here) before the proportion warp. The template's
#: mouth band is a horizontal ray plane at this height, so the lip primitives are placed
#: around it and no identity parameter moves it.
MOUTH_Y = -0.20
#: z about which depth and scale act (just behind the face)
DEPTH_CENTER_Z = 0.15
#: y about which height and scale act (eye level), keeping tall heads inside y < 0.6
HEIGHT_CENTER_Y = 0.05
#: constant shift back of every head: the implicit parts are laid out with the nose tip at
#: z ~0.371, the warped template has it at ~0.356
FACE_SHIFT_Z = -0.015


@dataclass(frozen=True)
class IdentityParams:
    """Shape parameters of one synthetic subject. Zero offsets / unit ratios = the template.

    Offsets are in nphm units, ratios are multiplicative, angles in radians.
    """

    scale: float = 1.0             # overall size
    width: float = 1.0             # x ratio
    height: float = 1.0            # y ratio
    depth: float = 1.0             # z ratio
    lower_face: float = 1.0        # vertical ratio of everything below the eyes
    jaw_width: float = 1.0         # x ratio at jaw height
    hair: float = 0.0              # hair volume on the cranium (thickness, >= 0)
    nose_length: float = 0.0       # forward offset of the nose tip
    nose_width: float = 1.0        # ratio of the alae spacing / tip width
    nose_bridge: float = 0.0       # forward offset of the nose bridge
    nose_droop: float = 0.0        # downward offset of the nose tip
    ear_size: float = 1.0          # ratio of the ear size
    ear_angle: float = 0.0         # extra outward rotation of the ears
    ear_height: float = 0.0        # vertical ear offset
    chin: float = 0.0              # forward offset of the chin
    chin_height: float = 0.0       # downward offset of the chin
    jaw_angle: float = 0.0         # lateral offset of the jaw angles (gonion)
    brow: float = 0.0              # brow ridge prominence offset
    cheeks: float = 0.0            # cheek fullness offset
    cheekbones: float = 0.0        # cheekbone prominence offset
    lips: float = 1.0              # lip thickness ratio
    eyes: float = 0.0              # eye socket depth offset
    neck: float = 1.0              # neck thickness ratio

    def to_dict(self) -> Dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


#: (mean, standard deviation, clip half-width in standard deviations) of the sampled
#: identity parameters; ``hair`` is handled separately (a mixture of short and long hair).
_PRIOR = {
    "scale": (1.0, 0.03, 2.0),
    "width": (1.0, 0.035, 2.0),
    "height": (1.0, 0.025, 2.0),
    "depth": (1.0, 0.025, 2.0),
    "lower_face": (1.0, 0.05, 2.5),
    "jaw_width": (1.0, 0.05, 2.5),
    "nose_length": (0.0, 0.007, 2.0),
    "nose_width": (1.0, 0.12, 2.5),
    "nose_bridge": (0.0, 0.006, 2.5),
    "nose_droop": (0.0, 0.008, 2.5),
    "ear_size": (1.0, 0.08, 2.5),
    "ear_angle": (0.0, 0.1, 2.0),
    "ear_height": (0.0, 0.012, 2.5),
    "chin": (0.0, 0.012, 2.5),
    "chin_height": (0.0, 0.01, 2.5),
    "jaw_angle": (0.0, 0.015, 2.5),
    "brow": (0.0, 0.007, 2.5),
    "cheeks": (0.0, 0.012, 2.5),
    "cheekbones": (0.0, 0.008, 2.5),
    "lips": (1.0, 0.15, 2.5),
    "eyes": (0.0, 0.006, 2.5),
    "neck": (1.0, 0.06, 2.5),
}


def sample_identity(rng: np.random.Generator) -> IdentityParams:
    """Draw identity parameters from the prior (clipped normals; hair from a mixture)."""
    values = {}
    for f in fields(IdentityParams):
        if f.name == "hair":
            continue
        mean, std, clip = _PRIOR[f.name]
        values[f.name] = mean + std * float(np.clip(rng.standard_normal(), -clip, clip))
    # about a third short hair (almost no volume), the rest up to 12.5 mm
    values["hair"] = float(rng.uniform(0.0, 0.012) if rng.random() < 0.35 else rng.uniform(0.015, 0.05))
    return IdentityParams(**values)


def _side_points(points: np.ndarray) -> np.ndarray:
    """Points folded onto the left (+x) half: |x|. Mirror-symmetric parts are then described
    once; any primitive evaluated on folded points is symmetric by construction."""
    return np.concatenate([np.abs(points[:, :1]), points[:, 1:]], axis=1)


def _apply_local(d: np.ndarray, q: np.ndarray, lo, hi, group) -> np.ndarray:
    """Apply ``group(d, q) -> d`` only to points inside the box [lo, hi] (folded frame).

    A feature changes the distance only within its blend radius, so points outside a box
    that encloses the feature with a margin larger than its blend radii keep their value
    (and, which is all the surface needs, always their sign).
    """
    inside = np.all((q >= np.asarray(lo)) & (q <= np.asarray(hi)), axis=1)
    idx = np.flatnonzero(inside)
    if len(idx):
        d = d.copy()
        d[idx] = group(d[idx], q[idx])
    return d


def head_sdf(points: np.ndarray, p: IdentityParams = IdentityParams()) -> np.ndarray:
    """Approximate signed distance (N,) of the un-warped head of identity ``p``.

    Args:
        points: (N, 3) in the nphm frame, before :func:`identity_warp`.
    """
    q = _side_points(points)
    lips = p.lips

    # --- cranium, hair and neck
    d = ellipsoid(q, (0.0, 0.15, -0.07), (0.295, 0.34, 0.385))
    if p.hair > 1e-4:
        # hair: an outward offset of the cranium that fades in above a hairline running from
        # the top of the forehead over the ears down to the nape
        hairline = 0.12 + 0.2 * np.tanh(q[:, 2] / 0.2)
        d = d - p.hair * smoothstep(q[:, 1] - hairline, 0.0, 0.14)
    neck = vertical_elliptic_cylinder(q, (0.0, -0.06), (0.19 * p.neck, 0.215 * p.neck), top_y=-0.05)
    d = smooth_union(d, neck, 0.10)

    # --- face volume: midface, maxilla/muzzle, cheeks, jaw and chin
    d = smooth_union(d, ellipsoid(q, (0.0, -0.03, 0.06), (0.245, 0.27, 0.255)), 0.06)
    d = smooth_union(d, ellipsoid(q, (0.0, -0.175, 0.185), (0.13, 0.10, 0.125)), 0.04)
    d = smooth_union(d, ellipsoid(q, (0.13, -0.08, 0.17 + p.cheeks), (0.09, 0.09, 0.09)), 0.06)
    d = smooth_union(d, ellipsoid(q, (0.15, 0.0, 0.17 + p.cheekbones), (0.09, 0.05, 0.08)), 0.06)
    d = smooth_union(d, capsule(q, (0.19, 0.0, 0.12), (0.25, 0.01, -0.02), 0.035), 0.06)
    gonion = (0.19 + p.jaw_angle, -0.20, -0.02)
    chin_c = (0.0, -0.345 - p.chin_height, 0.228 + p.chin)
    jaw_front = (0.065, chin_c[1] + 0.005, chin_c[2] - 0.01)
    d = smooth_union(d, capsule(q, gonion, jaw_front, 0.04, 0.055), 0.08)
    d = smooth_union(d, ellipsoid(q, chin_c, (0.075, 0.07, 0.07)), 0.05)

    # --- brow ridge
    brow_in = (0.0, 0.145, 0.29 + p.brow)
    brow_out = (0.15, 0.16, 0.225 + 0.5 * p.brow)
    d = smooth_union(d, capsule(q, brow_in, brow_out, 0.032, 0.022), 0.04)

    # --- eyes: socket carved out, eyeball put back, lids as thin rims
    eye_c = np.array([0.095, 0.085, 0.215 - p.eyes])

    def eyes(d, q):
        d = smooth_subtract(d, ellipsoid(q, eye_c + (0.0, 0.0, 0.085), (0.062, 0.042, 0.05)), 0.025)
        d = smooth_union(d, sphere(q, eye_c, 0.058), 0.012)
        upper_lid = ellipsoid(q, eye_c + (0.0, 0.018, 0.043), (0.048, 0.022, 0.018), rotation_xyz(rx=-0.35))
        lower_lid = ellipsoid(q, eye_c + (0.0, -0.022, 0.040), (0.045, 0.014, 0.016), rotation_xyz(rx=0.3))
        return smooth_union(d, np.minimum(upper_lid, lower_lid), 0.012)

    d = _apply_local(d, q, eye_c - (0.12, 0.10, 0.08), eye_c + (0.12, 0.10, 0.20), eyes)

    # --- nose: bridge, tip, alae; nostrils carved below the tip; philtrum groove
    tip = np.array([0.0, -0.055 - p.nose_droop, 0.335 + p.nose_length])
    bridge_top = np.array([0.0, 0.10, 0.282 + p.nose_bridge])

    def nose(d, q):
        d = smooth_union(d, capsule(q, bridge_top, tip, 0.016, 0.03 * (0.6 + 0.4 * p.nose_width)), 0.03)
        d = smooth_union(d, sphere(q, tip + (0.0, -0.002, -0.003), 0.035 * (0.7 + 0.3 * p.nose_width)), 0.02)
        ala = np.array([0.037 * p.nose_width, -0.085 - 0.5 * p.nose_droop, 0.29 + 0.5 * p.nose_length])
        d = smooth_union(d, ellipsoid(q, ala, (0.028, 0.024, 0.026)), 0.02)
        nostril = ellipsoid(q, (0.017 * p.nose_width, tip[1] - 0.04, tip[2] - 0.03), (0.011, 0.006, 0.016))
        d = smooth_subtract(d, nostril, 0.006)
        return smooth_subtract(d, ellipsoid(q, (0.0, -0.14, 0.338), (0.012, 0.03, 0.01)), 0.01)

    d = _apply_local(d, q, (-1.0, -0.24, 0.18), (0.14, 0.20, 0.50), nose)

    # --- lips around the mouth line and the chin-lip fold (mentolabial sulcus)
    def mouth(d, q):
        upper = ellipsoid(q, (0.0, MOUTH_Y + 0.02 * lips, 0.288 + 0.008 * lips), (0.085, 0.024 * lips, 0.035))
        lower = ellipsoid(q, (0.0, MOUTH_Y - 0.024 * lips, 0.28 + 0.008 * lips), (0.075, 0.026 * lips, 0.035))
        d = smooth_union(d, np.minimum(upper, lower), 0.02)
        fold = capsule(q, (-0.05, -0.285, 0.315 + 0.5 * p.chin), (0.05, -0.285, 0.315 + 0.5 * p.chin), 0.012)
        return smooth_subtract(d, fold, 0.02)

    d = _apply_local(d, q, (-1.0, -0.36, 0.18), (0.16, -0.08, 0.45), mouth)

    # --- ears: a tilted plate with a carved bowl, attached to the side of the head
    s = p.ear_size
    ear_c = np.array([0.30, 0.01 + p.ear_height, -0.055])
    ear_rot = rotation_xyz(rx=-0.25, ry=-(0.45 + p.ear_angle))

    def ears(d, q):
        ear = ellipsoid(q, ear_c, (0.03, 0.13 * s, 0.075 * s), ear_rot)
        bowl = ellipsoid(q, ear_c + ear_rot @ np.array([0.032, -0.01 * s, 0.005]),
                         (0.02, 0.05 * s, 0.03 * s), ear_rot)
        return smooth_union(d, smooth_subtract(ear, bowl, 0.01), 0.03)

    d = _apply_local(d, q, ear_c - (0.1, 0.2, 0.16), ear_c + (0.14, 0.2, 0.16), ears)
    return d


def identity_warp(points: np.ndarray, p: IdentityParams) -> np.ndarray:
    """Proportion warp (N, 3) -> (N, 3); bijective for any parameters with positive ratios.

    y is mapped by a monotone function (the lower face is stretched by ``lower_face``);
    x and z are scaled by positive factors that depend on y only, so each horizontal slice
    maps to one horizontal slice by a positive scaling.
    """
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    # depth, height and overall scale act about a point at eye level just behind the face, so
    # that large heads grow backwards and downwards rather than out of the release's bounding
    # boxes (nose tip z < 0.4, top of the head y < 0.6)
    # lower face: y' = y + (f - 1) * softmin(y - y0, 0); the soft minimum has a derivative in
    # (0, 1), so dy'/dy lies between 1 and f and the map stays monotone
    y0, k = 0.05, 0.03
    below = -k * np.logaddexp(0.0, -(y - y0) / k)
    y_new = y + (p.lower_face - 1.0) * below
    # jaw width acts around the jaw line and fades out above the cheekbones and down the neck
    jaw = smoothstep(y, 0.0, -0.2) * smoothstep(y, -0.55, -0.4)
    sx = p.width * (1.0 + (p.jaw_width - 1.0) * jaw)
    s = p.scale
    zc = DEPTH_CENTER_Z
    yc = HEIGHT_CENTER_Y
    return np.stack([x * sx * s, (y_new - yc) * p.height * s + yc, (z - zc) * p.depth * s + zc + FACE_SHIFT_Z],
                    axis=-1)
