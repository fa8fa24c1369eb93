"""Coordinate frames of the NPHM data.

- nphm frame: FLAME's coordinate system scaled by 4 (one unit = 250 mm for an average head).
  Training, fitting and meshing happen here; every mesh of the dataset is stored in it.
- flame frame: nphm / 4.
- raw (metric) frame: the scanner's frame in millimetres. Each scan stores a similarity
  ``s, R, t`` with ``x_raw = (1 / s) * (x_nphm - t) @ R`` for row vectors, hence
  ``x_nphm = s * x_raw @ R^-1 + t``. Distances: ``d_mm = d_nphm / s``.

All functions take ``(N, 3)`` row-vector arrays (or anything broadcasting like them) and
return new arrays; they never modify their input.
"""
from __future__ import annotations

from typing import Literal

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
