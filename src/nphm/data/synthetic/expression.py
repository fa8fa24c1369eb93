"""Expression model of the synthetic heads: smooth displacement fields on the neutral head.

An expression moves every vertex by a displacement that depends on its *material*
coordinates - the template position ``rest`` (V, 3) and the grid coordinates (u, s) of the
vertex - so that the same expression acts consistently on every identity and every
sampling (registration, FLAME-like, scan).

Components (``ExpressionParams``):

- ``jaw``: jaw opening angle (radians). The lower face, including the lower sheet of the
  mouth pocket, rotates about a horizontal hinge in front of the ears (plus a small forward
  slide); the weight falls to zero above the mouth line, behind the jaw angle and down the
  neck, so the pocket opens into a visible mouth cavity.
- ``jaw_side``: lateral shift of the jaw (asymmetric), effective with an open mouth only.
- ``smile_l``/``smile_r``: mouth corner pulled up, back and out, cheek raised.
- ``pucker``: lips pushed forward and narrowed.
- ``brow_l``/``brow_r``: brow raise (positive) or lowering (negative).
- ``eye_l``/``eye_r``: eye closing (upper lid down, lower lid up).
- ``puff_l``/``puff_r``: cheek puff, outwards along the template rays (a smooth stand-in for
  the normal that does not flip between the two lips).

``_l`` acts on the subject's left (+x) side. Every field has compact support away from the
back of the head, where displacements are exactly zero. Amplitudes are kept small relative
to the support radii (displacement gradients below ~0.6), so the maps stay bijective and no
triangle flips (checked over many identities: face normals turn by less than ~60 degrees).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Dict, Tuple

import numpy as np

from nphm.data.synthetic.implicit import bump, smoothstep
from nphm.data.synthetic.shape import IdentityParams, identity_warp

#: Expression index conventions of the synthetic datasets (mirroring the release, where
#: expression 0 is mostly the neutral closed-mouth scan and 1 the neutral open-mouth one).
NEUTRAL_CLOSED = 0
NEUTRAL_OPEN = 1

#: Names of the expression types by expression index; indices past the list are random mixtures.
EXPRESSION_TYPES: Tuple[str, ...] = (
    "neutral_closed", "neutral_open", "jaw_open", "smile", "laugh", "pucker", "brows_up",
    "eyes_closed", "cheek_puff", "smirk", "wink", "surprise", "frown", "jaw_side",
)

#: Hinge of the jaw rotation (a horizontal axis along x through this point), template frame.
JAW_HINGE = np.array([0.0, 0.0, -0.015])

_MIRROR = np.array([-1.0, 1.0, 1.0])


@dataclass(frozen=True)
class ExpressionParams:
    """Amplitudes of the expression components (all zero = neutral with closed lips)."""

    jaw: float = 0.0
    jaw_side: float = 0.0
    smile_l: float = 0.0
    smile_r: float = 0.0
    pucker: float = 0.0
    brow_l: float = 0.0
    brow_r: float = 0.0
    eye_l: float = 0.0
    eye_r: float = 0.0
    puff_l: float = 0.0
    puff_r: float = 0.0

    def to_dict(self) -> Dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def expression_type(index: int) -> str:
    """Name of the expression type of expression ``index``."""
    return EXPRESSION_TYPES[index] if index < len(EXPRESSION_TYPES) else "random"


def sample_expression(rng: np.random.Generator, index: int) -> ExpressionParams:
    """Expression ``index`` of a subject: its type is fixed by the index, its amplitudes
    (and, for one-sided types, the side) are drawn from ``rng``."""
    kind = expression_type(index)
    u = rng.uniform
    side = "l" if rng.random() < 0.5 else "r"
    other = "r" if side == "l" else "l"
    if kind == "neutral_closed":
        return ExpressionParams()
    if kind == "neutral_open":
        return ExpressionParams(jaw=u(0.035, 0.06))
    if kind == "jaw_open":
        return ExpressionParams(jaw=u(0.22, 0.32))
    if kind == "smile":
        a = u(0.7, 1.0)
        return ExpressionParams(smile_l=a * u(0.9, 1.1), smile_r=a * u(0.9, 1.1), jaw=u(0.0, 0.03))
    if kind == "laugh":
        a = u(0.6, 0.9)
        return ExpressionParams(smile_l=a, smile_r=a * u(0.9, 1.1), jaw=u(0.12, 0.2),
                                eye_l=u(0.2, 0.4), eye_r=u(0.2, 0.4))
    if kind == "pucker":
        return ExpressionParams(pucker=u(0.7, 1.0))
    if kind == "brows_up":
        a = u(0.7, 1.0)
        return ExpressionParams(brow_l=a, brow_r=a * u(0.9, 1.1), eye_l=-u(0.1, 0.3), eye_r=-u(0.1, 0.3))
    if kind == "eyes_closed":
        a = u(0.8, 1.0)
        return ExpressionParams(eye_l=a, eye_r=a)
    if kind == "cheek_puff":
        a = u(0.7, 1.0)
        return ExpressionParams(puff_l=a, puff_r=a * u(0.9, 1.1), pucker=u(0.0, 0.2))
    if kind == "smirk":
        return ExpressionParams(**{f"smile_{side}": u(0.7, 1.0), f"smile_{other}": u(0.0, 0.15)})
    if kind == "wink":
        return ExpressionParams(**{f"eye_{side}": u(0.8, 1.0), f"smile_{side}": u(0.2, 0.4)})
    if kind == "surprise":
        a = u(0.7, 1.0)
        return ExpressionParams(brow_l=a, brow_r=a, jaw=u(0.12, 0.22), eye_l=-0.3, eye_r=-0.3)
    if kind == "frown":
        a = u(0.6, 0.9)
        return ExpressionParams(brow_l=-a, brow_r=-a, pucker=u(0.1, 0.3), eye_l=u(0.1, 0.3), eye_r=u(0.1, 0.3))
    if kind == "jaw_side":
        return ExpressionParams(jaw=u(0.06, 0.12), jaw_side=rng.choice([-1.0, 1.0]) * u(0.6, 1.0))
    # random mixture: every component switched on with probability 0.4
    values = {
        "jaw": u(0.0, 0.3), "jaw_side": u(-0.6, 0.6), "smile_l": u(0.0, 1.0), "smile_r": u(0.0, 1.0),
        "pucker": u(0.0, 0.8), "brow_l": u(-0.8, 1.0), "brow_r": u(-0.8, 1.0), "eye_l": u(-0.3, 1.0),
        "eye_r": u(-0.3, 1.0), "puff_l": u(0.0, 0.8), "puff_r": u(0.0, 0.8),
    }
    on = rng.random(len(values)) < 0.4
    params = ExpressionParams(**{k: (v if o else 0.0) for (k, v), o in zip(values.items(), on)})
    if params.puff_l or params.puff_r:  # puffing needs closed lips
        params = replace(params, jaw=0.0)
    return params


# ----------------------------------------------------------------------------- basis fields
def _left_right(rest: np.ndarray, field_left) -> Tuple[np.ndarray, np.ndarray]:
    """A field defined for the left side and its mirror image for the right side."""
    left = field_left(rest)
    right = field_left(rest * _MIRROR) * _MIRROR
    return left, right


def _smile_left(x: np.ndarray) -> np.ndarray:
    corner = bump(x, (0.095, -0.2, 0.255), (0.12, 0.1, 0.12))[:, None] * np.array([0.008, 0.022, -0.012])
    cheek = bump(x, (0.13, -0.08, 0.225), (0.1, 0.09, 0.12))[:, None] * np.array([0.002, 0.012, 0.006])
    return corner + cheek


def _brow_left(x: np.ndarray) -> np.ndarray:
    return bump(x, (0.09, 0.165, 0.265), (0.12, 0.08, 0.14))[:, None] * np.array([0.0, 0.022, 0.003])


def _eye_left(x: np.ndarray) -> np.ndarray:
    upper = bump(x, (0.1, 0.11, 0.255), (0.07, 0.055, 0.09))[:, None] * np.array([0.0, -0.02, 0.004])
    lower = bump(x, (0.1, 0.055, 0.255), (0.06, 0.035, 0.09))[:, None] * np.array([0.0, 0.005, 0.0])
    return upper + lower


def _pucker(x: np.ndarray) -> np.ndarray:
    w = bump(x, (0.0, -0.2, 0.285), (0.13, 0.09, 0.12))
    return w[:, None] * np.stack([-0.18 * x[:, 0], np.zeros(len(x)), np.full(len(x), 0.022)], axis=1)


def _puff_left(x: np.ndarray, outward: np.ndarray) -> np.ndarray:
    return bump(x, (0.13, -0.17, 0.185), (0.1, 0.1, 0.13))[:, None] * 0.035 * outward


def jaw_weight(rest: np.ndarray, u: np.ndarray, s: np.ndarray, s_mouth: float, split: float,
               mouth_half_angle: float) -> np.ndarray:
    """Weight (V,) in [0, 1] of the jaw motion: 1 on the lower face and the lower half of the
    mouth pocket, 0 above the mouth line, behind the jaw and down the neck.

    Inside the mouth the weight goes from 0 to 1 within ``|s - s_mouth| < split`` (the back
    wall of the pocket, which stretches); over the cheeks the transition widens.
    """
    a = np.abs(np.angle(np.exp(1j * u)))
    width = split + (0.09 - split) * smoothstep(a, 0.9 * mouth_half_angle, mouth_half_angle + 0.5)
    below = smoothstep(s, s_mouth - width, s_mouth + width)
    front = smoothstep(rest[:, 2], -0.10, 0.12)
    above_neck = smoothstep(rest[:, 1], -0.70, -0.40)
    return below * front * above_neck


@dataclass
class ExpressionBasis:
    """Precomputed displacement fields of one grid (all (V, 3) in the template frame) and the
    jaw weight (V,)."""

    smile: Tuple[np.ndarray, np.ndarray]
    brow: Tuple[np.ndarray, np.ndarray]
    eye: Tuple[np.ndarray, np.ndarray]
    puff: Tuple[np.ndarray, np.ndarray]
    pucker: np.ndarray
    jaw: np.ndarray


def build_basis(rest: np.ndarray, outward: np.ndarray, u: np.ndarray, s: np.ndarray, s_mouth: float,
                split: float, mouth_half_angle: float) -> ExpressionBasis:
    """Basis fields for vertices with template positions ``rest`` (V, 3), a smooth outward
    direction field ``outward`` (V, 3) (the template rays: unlike surface normals it does not
    flip between the two lips) and grid coordinates ``u``, ``s`` (V,); ``split`` is the
    half-width in s of the jaw weight's transition inside the mouth."""
    return ExpressionBasis(
        smile=_left_right(rest, _smile_left),
        brow=_left_right(rest, _brow_left),
        eye=_left_right(rest, _eye_left),
        puff=(_puff_left(rest, outward), _puff_left(rest * _MIRROR, outward * _MIRROR) * _MIRROR),
        pucker=_pucker(rest),
        jaw=jaw_weight(rest, u, s, s_mouth, split, mouth_half_angle),
    )


def _rotation_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def apply_expression(neutral: np.ndarray, basis: ExpressionBasis, e: ExpressionParams,
                     identity: IdentityParams) -> np.ndarray:
    """Posed vertices (V, 3) from the neutral vertices ``neutral`` (V, 3) of ``identity``.

    The local fields are added first; then the jaw rotates the weighted lower face about the
    identity's hinge (the warped template hinge) by ``e.jaw`` (mouth opening: the chin moves
    down), with a small forward slide of the condyle and the lateral ``jaw_side`` shift.
    """
    x = neutral.copy()
    for (left, right), a_l, a_r in (
        (basis.smile, e.smile_l, e.smile_r), (basis.brow, e.brow_l, e.brow_r),
        (basis.eye, e.eye_l, e.eye_r), (basis.puff, e.puff_l, e.puff_r),
    ):
        if a_l:
            x += a_l * left
        if a_r:
            x += a_r * right
    if e.pucker:
        x += e.pucker * basis.pucker
    if e.jaw:
        hinge = identity_warp(JAW_HINGE[None], identity)[0]
        # opening = the chin (below and in front of the hinge) swings down: rotation about +x
        rot = _rotation_x(e.jaw)
        moved = (x - hinge) @ rot.T + hinge
        # a sideways shift needs an open mouth: with closed lips it would shear the thin pocket
        side = 0.03 * e.jaw_side * min(1.0, e.jaw / 0.15)
        moved += np.array([side, -0.03 * e.jaw, 0.1 * e.jaw])
        x += basis.jaw[:, None] * (moved - x)
    return x
