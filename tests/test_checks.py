"""Sanity checks of an alignment: unit mistakes and landmark orders are refused, force lets them pass."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from nphm.data.frames import Similarity, umeyama
from nphm.fitting.alignment import UNIT_TO_NPHM
from nphm.fitting.checks import (
    AlignmentCheckError,
    AlignmentCheckWarning,
    check_alignment,
    check_head_size,
    check_landmarks,
    head_extent,
)
from nphm.fitting.landmarks import load_landmark_reference

MODELS = Path(__file__).resolve().parents[1] / "pretrained" / "synthetic_cpu"
RADII_MM = np.array([80.0, 120.0, 100.0])  # an ellipsoid about the size of a head


def _head_mm(n: int = 4000, seed: int = 0) -> np.ndarray:
    """(n, 3) points on a head-sized ellipsoid, mm, centred at the origin."""
    d = np.random.default_rng(seed).normal(size=(n, 3))
    return d / np.linalg.norm(d, axis=1, keepdims=True) * RADII_MM


MEAN_HEAD_EXTENT = head_extent(_head_mm(seed=1) * UNIT_TO_NPHM["mm"])
ROTATION = Rotation.from_euler("xyz", [5, -10, 3], degrees=True).as_matrix()


def _aligned(points: np.ndarray, unit: str) -> np.ndarray:
    """The alignment a declared unit gives: scale of ``unit``, a small rotation, a shift."""
    return Similarity(UNIT_TO_NPHM[unit], ROTATION, np.array([0.0, 0.05, 0.0])).apply(points)


def test_correct_mm_scan_passes():
    result = check_head_size(_aligned(_head_mm(), "mm"), MEAN_HEAD_EXTENT, unit="mm")
    assert result.ok and 0.9 < result.value < 1.1


@pytest.mark.parametrize("factor, true_unit", [(1e-3, "m"), (0.1, "cm")])
def test_scan_in_other_unit_declared_mm_is_refused(factor, true_unit):
    points = _head_mm() * factor  # a metre / centimetre scan ...
    with pytest.raises(AlignmentCheckError, match=rf"wide .*pass --units {true_unit}\b") as info:
        check_head_size(_aligned(points, "mm"), MEAN_HEAD_EXTENT, unit="mm", source="me.ply")  # ... declared mm
    assert str(info.value).startswith("me.ply: the scan is") and isinstance(info.value, ValueError)


def test_mm_scan_declared_m_is_refused():
    with pytest.raises(AlignmentCheckError, match="millimetres.*pass --units mm"):
        check_head_size(_aligned(_head_mm(), "m"), MEAN_HEAD_EXTENT, unit="m")


def test_force_turns_the_size_error_into_a_warning():
    with pytest.warns(AlignmentCheckWarning, match="forced past: .*pass --units m"):
        result = check_head_size(_aligned(_head_mm() * 1e-3, "mm"), MEAN_HEAD_EXTENT, unit="mm", force=True)
    assert result.severity == "error" and result.value < 0.01


def test_shoulders_warn_without_landmarks_and_pass_quietly_with_fitting_landmarks():
    wide = _head_mm() * [2.0, 1.6, 1.0]  # a head with shoulders: twice as wide, 1.6x as tall
    with pytest.warns(AlignmentCheckWarning, match="more than a head"):
        assert check_head_size(_aligned(wide, "mm"), MEAN_HEAD_EXTENT, unit="mm").severity == "warning"
    # with landmarks that fit, 1.8x only says that the scan covers more than the head
    assert check_head_size(_aligned(wide, "mm"), MEAN_HEAD_EXTENT, landmarks_fit=True).ok
    # but a scan 1000x smaller than its (fitting) landmarks is another unit
    with pytest.raises(AlignmentCheckError, match="different units"):
        check_head_size(_aligned(_head_mm() * 1e-3, "mm"), MEAN_HEAD_EXTENT, landmarks_fit=True)


# ------------------------------------------------------------------------------------- landmarks
def _subject_landmarks(fmt: str, seed: int = 0, noise_mm: float = 2.0) -> np.ndarray:
    """The reference landmarks as a scan in mm: other pose, 5 % larger head, a little noise."""
    ref = load_landmark_reference(MODELS, fmt)
    rng = np.random.default_rng(seed)
    mm = ref / UNIT_TO_NPHM["mm"] * 1.05 + rng.normal(scale=noise_mm, size=ref.shape)
    return mm @ Rotation.from_euler("xyz", [20, 40, -10], degrees=True).as_matrix().T + [300.0, -50.0, 900.0]


@pytest.mark.parametrize("fmt", ["39", "68", "51"])
def test_landmarks_in_the_right_order_pass(fmt):
    lm = _subject_landmarks(fmt)
    ref = load_landmark_reference(MODELS, fmt)
    results = check_landmarks(lm, ref, fmt=fmt, unit="mm")
    assert [r.name for r in results] == ["landmark residual", "landmark scale"]
    assert all(r.ok for r in results) and results[0].value < 5.0


def test_shuffled_39_landmarks_are_refused():
    lm = _subject_landmarks("39")[np.random.default_rng(3).permutation(39)]
    ref = load_landmark_reference(MODELS, "39")
    with pytest.raises(AlignmentCheckError, match=r"lm.txt: the 39 landmarks are \d\d+ mm \(RMS\) from the NPHM "
                                                  r"anchors after alignment \(normal: under 10 mm\): are they in "
                                                  r"the NPHM anchor order \(release\)\? .*pass --landmark_format"):
        check_landmarks(lm, ref, fmt="39", source="lm.txt")
    with pytest.warns(AlignmentCheckWarning, match="forced past"):
        (result,) = check_landmarks(lm, ref, fmt="39", force=True)
    assert result.severity == "error" and result.value > 30


def test_mirrored_order_and_a_jaw_line_off_are_named():
    ref = load_landmark_reference(MODELS, "68")
    lm = _subject_landmarks("68")
    from nphm.fitting.landmarks import mirrored

    with pytest.raises(AlignmentCheckError, match="left and right look swapped"):
        check_landmarks(mirrored(lm, "68"), ref, fmt="68")
    jaw_off = lm.copy()
    jaw_off[:17] += np.random.default_rng(0).normal(scale=40.0, size=(17, 3))  # a 2D detector's contour
    with pytest.raises(AlignmentCheckError, match="without the jaw line fit.*--landmark_format 51"):
        check_landmarks(jaw_off, ref, fmt="68")


def test_landmarks_in_another_unit_than_declared_are_refused():
    lm = _subject_landmarks("39") / 10.0  # centimetres
    with pytest.raises(AlignmentCheckError, match="in centimetres\\? pass --units cm"):
        check_landmarks(lm, load_landmark_reference(MODELS, "39"), fmt="39", unit="mm")


def test_check_alignment_runs_landmarks_then_size():
    lm = _subject_landmarks("39")
    ref = load_landmark_reference(MODELS, "39")
    T = umeyama(lm, ref)
    head = _head_mm() * 1.05 @ Rotation.from_euler("xyz", [20, 40, -10], degrees=True).as_matrix().T
    results = check_alignment(T.apply(head), MEAN_HEAD_EXTENT, lm, ref, T, fmt="39")
    assert [r.name for r in results] == ["landmark residual", "head size"] and all(r.ok for r in results)
    with pytest.raises(AlignmentCheckError, match="different units"):  # the scan in m, its landmarks in mm
        check_alignment(T.apply(head * 1e-3), MEAN_HEAD_EXTENT, lm, ref, T, fmt="39")
