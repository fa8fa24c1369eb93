"""Sanity checks of a scan's alignment to the nphm frame that refuse a fit bound to fail.

Run after the alignment (:mod:`nphm.fitting.alignment`, :mod:`nphm.fitting.custom`), on the
scan's points in the nphm frame (1 unit = 250 mm, a head is about 0.65 units wide):

* **head size** (:func:`check_head_size`): the robust width and height of the aligned cloud
  (1st-99th percentile along nphm x and y) against the mean head's; ``ratio`` is the
  geometric mean of the two ratios. A wrong unit is off by a factor of 10 or more (mm / cm / m),
  while real scans vary by less: heads by +-20 %, a face-only crop about 0.6x, shoulders about
  2-2.5x. Bands (:data:`SIZE_BANDS`):

  - scale from a declared or guessed unit: error outside 0.4x-2.5x, warning outside 0.7x-1.5x;
  - scale measured by landmarks that fit (residual check passed): the ratio only says how much
    of the body the scan covers: error outside 0.2x-5x (the scan and the landmark file in
    different units), warning outside 0.5x-2x.

* **landmark residual** (:func:`check_landmarks`): the RMS distance, in mm on the mean head
  (nphm / 0.004), between the aligned landmarks and the reference after Umeyama. Normal is
  under 10 mm (synthetic test subjects: 2-8 mm, expressions included); over
  :data:`LANDMARK_WARN_MM` = 10 mm a warning, over :data:`LANDMARK_ERROR_MM` = 15 mm an error
  (a wrong order gives 40-80 mm). The message says what fits better: the mirrored order (left
  and right swapped), the 51 points without the jaw line, or names the worst landmarks.
* **landmark scale** (in :func:`check_landmarks`, when a unit is declared besides landmarks):
  the Umeyama scale against the unit's; error outside 0.5x-2x.

Errors raise :class:`AlignmentCheckError` (a ValueError) whose message says what is likely
wrong and what to pass; with ``force`` they become :class:`AlignmentCheckWarning` warnings.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np

from nphm.data.frames import Similarity, umeyama
from nphm.fitting.alignment import UNIT_TO_NPHM, closest_unit
from nphm.fitting.landmarks import FORMAT_ORDERS, FORMAT_REFERENCES, INDICES_51_IN_68, mirrored

#: nphm units per millimetre (1 unit = 250 mm).
NPHM_PER_MM = UNIT_TO_NPHM["mm"]
#: (warning band, error band) of the head-size ratio, by how the scale was obtained.
SIZE_BANDS: Dict[str, Tuple[Tuple[float, float], Tuple[float, float]]] = {
    "unit": ((0.7, 1.5), (0.4, 2.5)),
    "landmarks": ((0.5, 2.0), (0.2, 5.0)),
}
#: Landmark RMS residuals (mm on the mean head) above which a warning / an error is given.
LANDMARK_WARN_MM = 10.0
LANDMARK_ERROR_MM = 15.0
#: Allowed ratio of the landmarks' Umeyama scale to the declared unit's scale.
LANDMARK_SCALE_BAND = (0.5, 2.0)
#: Percentiles of the robust extent.
EXTENT_PERCENTILES = (1.0, 99.0)
UNIT_NAMES = {"mm": "millimetres", "cm": "centimetres", "m": "metres", "nphm": "nphm units"}

Severity = Literal["ok", "warning", "error"]


class AlignmentCheckError(ValueError):
    """An alignment that the sanity checks refuse (the message says what is likely wrong)."""


class AlignmentCheckWarning(UserWarning):
    """A doubtful alignment, or a refused one let through with ``force``."""


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check: ``value`` is the size ratio or the residual in mm."""

    name: str
    severity: Severity
    value: float
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.severity == "ok"


def _report(result: CheckResult, force: bool) -> CheckResult:
    """Raise an error result (warn with ``force``), warn a warning one; return the result."""
    if result.severity == "error" and not force:
        raise AlignmentCheckError(result.message)
    if result.severity != "ok":
        prefix = "forced past: " if result.severity == "error" else ""
        warnings.warn(prefix + result.message, AlignmentCheckWarning, stacklevel=3)
    return result


def head_extent(points: np.ndarray) -> np.ndarray:
    """Robust extent (3,) of points (N, 3): 99th minus 1st percentile along x, y, z (same frame)."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or len(p) == 0:
        raise ValueError(f"expected (N, 3) points, got shape {p.shape}")
    lo, hi = np.percentile(p, EXTENT_PERCENTILES, axis=0)
    return hi - lo


def check_head_size(
    points_nphm: np.ndarray,
    mean_head_extent: Sequence[float],
    unit: Optional[str] = None,
    unit_guessed: bool = False,
    landmarks_fit: bool = False,
    source: str = "scan",
    force: bool = False,
) -> CheckResult:
    """Refuse an aligned scan of implausible size (see the module docstring for the bands).

    Args:
        points_nphm: (N, 3) the whole aligned scan (before cropping to the model's box), nphm frame.
        mean_head_extent: (3,) :func:`head_extent` of the model's mean head surface, nphm frame.
        unit: the unit the scale came from (a key of :data:`UNIT_TO_NPHM`), None when landmarks
            gave the scale.
        unit_guessed: the unit was guessed from the size (not declared).
        landmarks_fit: the scale comes from landmarks that passed :func:`check_landmarks`.
        source: the scan's file name, for the message.
    Returns:
        the :class:`CheckResult` (``value``: the size ratio).
    Raises:
        AlignmentCheckError: far outside the band, unless ``force`` (then a warning).
    """
    ext = head_extent(points_nphm)
    ref = np.asarray(mean_head_extent, dtype=np.float64)
    width, height = ext[0], ext[1]
    ratio = float(np.sqrt(max(width / ref[0], 1e-300) * max(height / ref[1], 1e-300)))
    (warn_lo, warn_hi), (err_lo, err_hi) = SIZE_BANDS["landmarks" if landmarks_fit else "unit"]
    size = (f"{source}: the scan is {width:.3g} units wide and {height:.3g} tall after alignment "
            f"(the mean head: {ref[0]:.2g} x {ref[1]:.2g}, ratio {ratio:.3g})")
    if warn_lo <= ratio <= warn_hi:
        return CheckResult("head size", "ok", ratio)
    severity: Severity = "warning" if err_lo <= ratio <= err_hi else "error"
    if landmarks_fit and severity == "warning":
        hint = "its landmarks fit: does the scan cover only part of the head, or much more (shoulders, body)?"
    elif landmarks_fit:
        factor = f"{1 / ratio:.3g}x too small" if ratio < 1 else f"{ratio:.3g}x too large"
        hint = (f"its landmarks fit, so the scan and the landmark file look like different units (the scan "
                f"{factor}){'' if ratio < 1 else ', or the scan covers much more than a head (crop it)'}")
    elif unit is not None:
        declared = f"{UNIT_NAMES.get(unit, unit)} as {'guessed' if unit_guessed else 'declared'}"
        better = closest_unit(UNIT_TO_NPHM[unit] / ratio)
        if better != unit:
            hint = f"is it in {UNIT_NAMES.get(better, better)}, not {declared}? pass --units {better}"
        elif ratio > 1:
            hint = (f"in {declared}, does the scan hold more than a head (shoulders, body, background)? "
                    "crop it or give landmarks")
        else:
            hint = f"in {declared}, is it a partial scan or a child's head? give landmarks to measure its scale"
    else:
        hint = "check the alignment"
    return _report(CheckResult("head size", severity, ratio, f"{size}: {hint}"), force)


def residuals_mm(landmarks: np.ndarray, reference: np.ndarray, transform: Similarity) -> np.ndarray:
    """Per-landmark distances (L,) in mm on the mean head between ``transform.apply(landmarks)``
    (input frame -> nphm) and ``reference`` (L, 3), nphm frame."""
    d = np.linalg.norm(transform.apply(np.asarray(landmarks, dtype=np.float64)) - np.asarray(reference), axis=1)
    return d / NPHM_PER_MM


def _rms(d: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(d))))


def _refit_rms_mm(landmarks: np.ndarray, reference: np.ndarray) -> float:
    return _rms(residuals_mm(landmarks, reference, umeyama(landmarks, reference, with_scale=True)))


def check_landmarks(
    landmarks: np.ndarray,
    reference: np.ndarray,
    transform: Optional[Similarity] = None,
    fmt: Optional[str] = None,
    unit: Optional[str] = None,
    source: str = "landmarks",
    force: bool = False,
) -> List[CheckResult]:
    """Refuse landmarks that do not fit the reference: wrong order, wrong format, wrong unit.

    Args:
        landmarks: (L, 3) in the input frame and unit.
        reference: (L, 3) reference positions, nphm frame.
        transform: the similarity input -> nphm (default: Umeyama of ``landmarks`` to ``reference``).
        fmt: the landmark format ("68", "51", "39"; None: other sets), for the messages and the
            mirror test.
        unit: the scan's declared unit, if any (then the Umeyama scale is checked against it).
        source: the landmark file's name, for the messages.
    Returns:
        the results: "landmark residual" (``value``: RMS mm) and, with ``unit``, "landmark scale"
        (``value``: the landmarks' Umeyama scale / the unit's scale, whatever scale ``transform`` has).
    Raises:
        AlignmentCheckError: residual above :data:`LANDMARK_ERROR_MM` or scale off, unless ``force``.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if lm.shape != ref.shape:
        raise ValueError(f"{source}: {len(lm)} landmarks but the reference has {len(ref)}")
    free = umeyama(lm, ref, with_scale=True)  # the landmarks' own scale
    T = free if transform is None else transform
    lo, hi = LANDMARK_SCALE_BAND
    scale_ratio = None if unit is None else float(free.scale / UNIT_TO_NPHM[unit])
    if scale_ratio is not None and not lo <= scale_ratio <= hi:
        T = free  # the unit is wrong (reported below): judge the order at the landmarks' own scale
    d = residuals_mm(lm, ref, T)
    rms = _rms(d)
    known = fmt in FORMAT_ORDERS
    head = (f"{source}: the {len(lm)} landmarks are {rms:.0f} mm (RMS) from "
            f"{FORMAT_REFERENCES[fmt] if known else 'their reference'} after alignment "
            f"(normal: under {LANDMARK_WARN_MM:.0f} mm)")
    if rms <= LANDMARK_WARN_MM:
        result = CheckResult("landmark residual", "ok", rms)
    else:
        severity: Severity = "error" if rms > LANDMARK_ERROR_MM else "warning"
        hints = []
        if known:
            mirror_rms = _refit_rms_mm(mirrored(lm, fmt), ref)
            if mirror_rms < 0.5 * rms:
                hints.append(f"left and right look swapped (the mirrored order fits within {mirror_rms:.0f} mm; "
                             "point 0 must be the subject's right side)")
            if fmt == "68":
                inner = _refit_rms_mm(lm[INDICES_51_IN_68], ref[INDICES_51_IN_68])
                if inner <= LANDMARK_WARN_MM:
                    hints.append(f"the 51 points without the jaw line fit within {inner:.0f} mm: drop the jaw line "
                                 "(rows 0-16) and pass --landmark_format 51")
        if not hints:
            worst = np.argsort(d)[::-1][:3]
            order = FORMAT_ORDERS[fmt] if known else "the reference's order"
            hints.append(f"are they in {order}? if they are another set, pass --landmark_format or a reference "
                         "file of their positions (worst: " + ", ".join(f"#{i} {d[i]:.0f} mm" for i in worst) + ")")
        result = CheckResult("landmark residual", severity, rms, f"{head}: " + "; ".join(hints))
    results = [_report(result, force)]
    if scale_ratio is not None:
        # the landmarks' own scale (the alignment may have kept the unit's)
        if lo <= scale_ratio <= hi:
            results.append(CheckResult("landmark scale", "ok", scale_ratio))
        else:
            implied = closest_unit(free.scale)
            msg = (f"{source}: the landmarks give a scale of {free.scale:.3g} nphm units per input unit, "
                   f"{scale_ratio:.3g}x that of the declared unit {unit} ({UNIT_TO_NPHM[unit]:g}): "
                   f"are the landmarks (or the scan) in {UNIT_NAMES.get(implied, implied)}? pass --units {implied}")
            results.append(_report(CheckResult("landmark scale", "error", scale_ratio, msg), force))
    return results


def check_alignment(
    points_nphm: np.ndarray,
    mean_head_extent: Sequence[float],
    landmarks: Optional[np.ndarray] = None,
    reference: Optional[np.ndarray] = None,
    transform: Optional[Similarity] = None,
    fmt: Optional[str] = None,
    unit: Optional[str] = None,
    unit_guessed: bool = False,
    source: str = "scan",
    force: bool = False,
) -> List[CheckResult]:
    """All checks of one aligned scan: the landmarks' (when given), then the head size.

    Args:
        points_nphm: (N, 3) the aligned scan, nphm frame (before cropping).
        mean_head_extent: (3,) :func:`head_extent` of the mean head, nphm frame.
        landmarks, reference, transform, fmt: see :func:`check_landmarks` (landmarks None: the
            scale came from ``unit``).
        unit, unit_guessed: the scan's unit and whether it was guessed.
    """
    results: List[CheckResult] = []
    landmarks_fit = False
    if landmarks is not None:
        if reference is None:
            raise ValueError("check_alignment: landmarks given without their reference")
        results += check_landmarks(landmarks, reference, transform, fmt, unit, f"{source} (landmarks)", force)
        landmarks_fit = all(r.ok for r in results)
    results.append(check_head_size(points_nphm, mean_head_extent, None if landmarks is not None else unit,
                                   unit_guessed, landmarks_fit, source, force))
    return results


__all__ = [
    "AlignmentCheckError", "AlignmentCheckWarning", "CheckResult", "SIZE_BANDS", "LANDMARK_WARN_MM",
    "LANDMARK_ERROR_MM", "LANDMARK_SCALE_BAND", "head_extent", "check_head_size", "residuals_mm",
    "check_landmarks", "check_alignment",
]
