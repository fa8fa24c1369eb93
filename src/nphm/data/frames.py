"""Coordinate frames of the NPHM data.

- nphm frame: FLAME's coordinate system scaled by 4 (one unit = 250 mm for an average head).
  Training, fitting and meshing happen here; every mesh of the dataset is stored in it.
- flame frame: nphm / 4.
- raw (metric) frame: the scanner's frame in millimetres. Each scan stores a similarity
  ``s, R, t`` with ``x_raw = (1 / s) * (x_nphm - t) @ R`` for row vectors, hence
  ``x_nphm = s * x_raw @ R^-1 + t``. Distances: ``d_mm = d_nphm / s``.

All functions take ``(N, 3)`` row-vector arrays (or anything broadcasting like them) and
return new arrays; they never modify their input.

:class:`Similarity` is such a map as a value (``x_nphm = s * x_in @ R^T + t``, the inverse of
:func:`nphm_to_raw`), and :func:`umeyama` fits one to corresponding points; the scan alignment
(:mod:`nphm.fitting.alignment`) and the ICT head model (:mod:`nphm.data.heads`) both use them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np

#: x_nphm = FLAME_TO_NPHM_SCALE * x_flame
FLAME_TO_NPHM_SCALE = 4.0

Frame = Literal["nphm", "flame", "raw"]
FRAMES = ("nphm", "flame", "raw")


def nphm_to_raw(points: np.ndarray, s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Map ``points`` (N, 3) from the nphm frame to the raw (mm) frame: ``(1/s) (x - t) @ R``."""
    return (np.asarray(points, dtype=np.float64) - np.asarray(t, dtype=np.float64)) @ np.asarray(
        R, dtype=np.float64) / float(s)


def raw_to_nphm(points: np.ndarray, s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Map ``points`` (N, 3) from the raw (mm) frame to the nphm frame: ``s x @ R^-1 + t``.

    The exact inverse of :func:`nphm_to_raw` (``R`` is a rotation in the release, but the
    inverse is taken explicitly so that the round trip holds for any invertible ``R``).
    """
    R_inv = np.linalg.inv(np.asarray(R, dtype=np.float64))
    return float(s) * np.asarray(points, dtype=np.float64) @ R_inv + np.asarray(t, dtype=np.float64)


def nphm_to_flame(points: np.ndarray) -> np.ndarray:
    """Map ``points`` (N, 3) from the nphm frame to the flame frame (divide by 4)."""
    return np.asarray(points, dtype=np.float64) / FLAME_TO_NPHM_SCALE


def flame_to_nphm(points: np.ndarray) -> np.ndarray:
    """Map ``points`` (N, 3) from the flame frame to the nphm frame (multiply by 4)."""
    return np.asarray(points, dtype=np.float64) * FLAME_TO_NPHM_SCALE


def nphm_distance_to_mm(distance: np.ndarray, s: float) -> np.ndarray:
    """Convert distances measured in the nphm frame to millimetres (``d / s``)."""
    return np.asarray(distance, dtype=np.float64) / float(s)


@dataclass(frozen=True)
class Similarity:
    """``x_nphm = scale * x_in @ rotation.T + translation`` (row vectors; ``rotation`` a rotation).

    :meth:`apply` is :func:`raw_to_nphm` and :meth:`invert` is :func:`nphm_to_raw` with
    ``s, R, t = scale, rotation, translation``.
    """

    scale: float
    rotation: np.ndarray
    translation: np.ndarray

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Input frame -> nphm frame, points (..., 3)."""
        return raw_to_nphm(points, self.scale, self.rotation, self.translation)

    def apply_offsets(self, offsets: np.ndarray) -> np.ndarray:
        """Input frame -> nphm frame for offsets / directions (..., 3) (differences of points,
        e.g. morphable-model modes): ``scale * offsets @ rotation.T``, not translated.

        Uses ``rotation.T`` where :meth:`apply` inverts ``rotation``: equal for a rotation up
        to rounding (~1e-16 relative), so ``apply_offsets(x) + translation`` is :meth:`apply`
        to the last bits only.
        """
        linear = self.scale * np.asarray(self.rotation, dtype=np.float64)
        return np.asarray(offsets, dtype=np.float64) @ linear.T

    def invert(self, points: np.ndarray) -> np.ndarray:
        """nphm frame -> input frame, points (..., 3)."""
        return nphm_to_raw(points, self.scale, self.rotation, self.translation)

    def matrix(self) -> np.ndarray:
        """(4, 4) homogeneous matrix (column vectors) of the input -> nphm map."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m

    def to_dict(self) -> dict:
        return {
            "convention": "x_nphm = scale * x_in @ rotation.T + translation (row vectors); "
                          "matrix_input_to_nphm acts on column vectors [x, 1]",
            "scale": float(self.scale),
            "rotation": np.asarray(self.rotation).tolist(),
            "translation": np.asarray(self.translation).tolist(),
            "matrix_input_to_nphm": self.matrix().tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Similarity":
        """The similarity of a :meth:`to_dict` record (e.g. a fit's ``{name}_transform.json``)."""
        try:
            return cls(float(data["scale"]), np.asarray(data["rotation"], dtype=np.float64).reshape(3, 3),
                       np.asarray(data["translation"], dtype=np.float64).reshape(3))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a similarity record (scale, rotation 3x3, translation 3): {e}") from e

    @classmethod
    def identity(cls) -> "Similarity":
        return cls(1.0, np.eye(3), np.zeros(3))


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True,
            weights: Optional[np.ndarray] = None) -> Similarity:
    """Least-squares similarity with ``dst ~ s * src @ R.T + t`` (Umeyama 1991).

    Minimises ``sum_i w_i ||s * src_i @ R.T + t - dst_i||^2`` over s > 0, proper rotations R
    (det +1) and translations t.

    Args:
        src, dst: (N, 3) corresponding points (N >= 3, not collinear).
        with_scale: estimate the scale (else s = 1).
        weights: optional (N,) non-negative weights of the correspondences.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or src.shape[0] < 3:
        raise ValueError(f"umeyama needs two (N>=3, 3) arrays of equal shape, got {src.shape} and {dst.shape}")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mu_s = w @ src
    mu_d = w @ dst
    xs = src - mu_s
    xd = dst - mu_d
    cov = (xd * w[:, None]).T @ xs  # (3, 3) = sum w d s^T
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1.0
    R = U @ D @ Vt
    var_s = float(w @ (xs ** 2).sum(1))
    if with_scale:
        if var_s <= 0:
            raise ValueError("umeyama: source points have no spread")
        s = float(np.trace(np.diag(S) @ D) / var_s)
    else:
        s = 1.0
    t = mu_d - s * R @ mu_s
    return Similarity(s, R, t)
