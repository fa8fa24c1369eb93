"""Expressions of the ICT heads: the release's vocabulary as weights of the kit's ARKit shapes.

Expression ``index`` of a subject has the type ``EXPRESSION_TYPES[index]`` (the procedural
generator's list: 0 neutral closed, 1 neutral open, ..., then random mixtures); the weights
(in [0, 1]) are drawn per (seed, subject, expression) within the ranges below, so every
subject smiles a little differently. ``_L`` is the subject's left (+x) side in the kit.

| type | ARKit shapes |
|---|---|
| neutral_closed | none |
| neutral_open | jawOpen 0.08-0.16 (lips 4-7 mm apart) |
| jaw_open | jawOpen 0.55-0.9 |
| smile | mouthSmile_L/R 0.75-1, cheekSquint_L/R, a little eyeSquint |
| laugh | smile + jawOpen 0.3-0.55 + cheekSquint + eyeSquint |
| pucker | mouthPucker 0.7-1, a little mouthFunnel |
| brows_up | browInnerUp_L/R + browOuterUp_L/R 0.6-1, a little eyeWide |
| eyes_closed | eyeBlink_L/R 0.9-1 |
| cheek_puff | cheekPuff_L/R 0.7-1, a little mouthPucker |
| smirk | mouthSmile on one side 0.6-1 (+ cheekSquint, mouthLeft/Right there), the other 0-0.15 |
| wink | eyeBlink on one side 0.9-1, cheekSquint and mouthSmile there |
| surprise | browInnerUp + browOuterUp, jawOpen 0.3-0.6, eyeWide 0.4-0.8 |
| frown | browDown_L/R 0.5-0.9, mouthFrown_L/R 0.5-0.9, a little mouthShrugLower |
| jaw_side | jawLeft or jawRight 0.5-1 + jawOpen 0.08-0.2 |
| random | 3-5 shapes of :data:`MIXTURE_SHAPES` at 0.2-0.8 (pairs symmetric or not) |
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Tuple

import numpy as np

from nphm.data.synthetic.expression import expression_type

#: shapes (or _L/_R pairs, written without the suffix) random mixtures draw from
MIXTURE_SHAPES: Tuple[str, ...] = (
    "browDown", "browInnerUp", "browOuterUp", "cheekPuff", "cheekSquint", "eyeBlink", "eyeSquint", "eyeWide",
    "jawForward", "jawOpen", "mouthDimple", "mouthFrown", "mouthFunnel", "mouthLeft", "mouthLowerDown",
    "mouthPress", "mouthPucker", "mouthRight", "mouthRollLower", "mouthShrugLower", "mouthShrugUpper",
    "mouthSmile", "mouthStretch", "mouthUpperUp", "noseSneer",
)
#: shapes without _L/_R variants
UNPAIRED = frozenset({"jawForward", "jawOpen", "mouthFunnel", "mouthLeft", "mouthPucker", "mouthRight",
                      "mouthRollLower", "mouthShrugLower", "mouthShrugUpper"})


@dataclass(frozen=True)
class IctExpression:
    """One expression: its type and its ARKit weights (name -> weight, only the non-zero ones)."""

    kind: str
    weights: Mapping[str, float]

    def to_dict(self) -> Dict[str, float]:
        return {k: float(v) for k, v in self.weights.items()}


def _both(name: str, a: float, spread: float, rng: np.random.Generator) -> Dict[str, float]:
    """``name_L`` and ``name_R`` at about ``a`` (each times U(1 - spread, 1 + spread))."""
    return {f"{name}_{s}": float(np.clip(a * rng.uniform(1.0 - spread, 1.0 + spread), 0.0, 1.0)) for s in "LR"}


def _mixture(rng: np.random.Generator) -> Dict[str, float]:
    """Sparse random weights: 3-5 shapes of :data:`MIXTURE_SHAPES`."""
    out: Dict[str, float] = {}
    picks = rng.choice(len(MIXTURE_SHAPES), size=int(rng.integers(3, 6)), replace=False)
    for k in sorted(picks):
        name, w = MIXTURE_SHAPES[k], rng.uniform(0.2, 0.8)
        if name in UNPAIRED:
            out[name] = w * (0.7 if name == "jawOpen" else 1.0)
        elif rng.random() < 0.6:
            out.update(_both(name, w, 0.15, rng))
        else:
            out[f"{name}_{'L' if rng.random() < 0.5 else 'R'}"] = w
    if "mouthLeft" in out and "mouthRight" in out:
        del out["mouthRight"]
    return out


def expression_weights(kind: str, rng: np.random.Generator) -> Dict[str, float]:
    """ARKit weights of an expression of type ``kind`` (see the module docstring)."""
    u = rng.uniform
    side = "L" if rng.random() < 0.5 else "R"
    other = "R" if side == "L" else "L"
    if kind == "neutral_closed":
        return {}
    if kind == "neutral_open":
        return {"jawOpen": u(0.08, 0.16)}
    if kind == "jaw_open":
        return {"jawOpen": u(0.55, 0.9)}
    if kind in ("smile", "laugh"):
        a = u(0.75, 1.0) if kind == "smile" else u(0.6, 0.9)
        w = {**_both("mouthSmile", a, 0.1, rng), **_both("cheekSquint", a * u(0.3, 0.7), 0.1, rng),
             **_both("eyeSquint", u(0.0, 0.3) if kind == "smile" else u(0.2, 0.45), 0.1, rng)}
        w["jawOpen"] = u(0.0, 0.06) if kind == "smile" else u(0.3, 0.55)
        return w
    if kind == "pucker":
        return {"mouthPucker": u(0.7, 1.0), "mouthFunnel": u(0.0, 0.3)}
    if kind == "brows_up":
        a = u(0.6, 1.0)
        return {**_both("browInnerUp", a, 0.1, rng), **_both("browOuterUp", a, 0.15, rng),
                **_both("eyeWide", u(0.0, 0.3), 0.1, rng)}
    if kind == "eyes_closed":
        return _both("eyeBlink", u(0.9, 1.0), 0.03, rng)
    if kind == "cheek_puff":
        return {**_both("cheekPuff", u(0.7, 1.0), 0.1, rng), "mouthPucker": u(0.0, 0.2)}
    if kind == "smirk":
        a = u(0.6, 1.0)
        return {f"mouthSmile_{side}": a, f"cheekSquint_{side}": a * u(0.2, 0.5), f"mouthSmile_{other}": u(0.0, 0.15),
                ("mouthLeft" if side == "L" else "mouthRight"): u(0.1, 0.35)}
    if kind == "wink":
        return {f"eyeBlink_{side}": u(0.9, 1.0), f"cheekSquint_{side}": u(0.2, 0.5), f"mouthSmile_{side}": u(0.1, 0.35)}
    if kind == "surprise":
        a = u(0.6, 1.0)
        return {**_both("browInnerUp", a, 0.1, rng), **_both("browOuterUp", a, 0.1, rng),
                **_both("eyeWide", u(0.4, 0.8), 0.1, rng), "jawOpen": u(0.3, 0.6)}
    if kind == "frown":
        a = u(0.5, 0.9)
        return {**_both("browDown", a, 0.1, rng), **_both("mouthFrown", u(0.5, 0.9), 0.1, rng),
                "mouthShrugLower": u(0.0, 0.3)}
    if kind == "jaw_side":
        return {("jawLeft" if side == "L" else "jawRight"): u(0.5, 1.0), "jawOpen": u(0.08, 0.2)}
    if kind == "random":
        return _mixture(rng)
    raise ValueError(f"unknown expression type {kind!r}")


def sample_expression(rng: np.random.Generator, index: int) -> IctExpression:
    """Expression ``index`` of a subject (type fixed by the index, weights drawn from ``rng``)."""
    kind = expression_type(index)
    weights = {k: float(v) for k, v in sorted(expression_weights(kind, rng).items()) if v > 0.0}
    return IctExpression(kind=kind, weights=weights)

