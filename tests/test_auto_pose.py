"""Automatic pose of a head scan from any orientation, unit and size (nphm.fitting.auto_pose).

A held-out procedural head (seed 0; the shipped CPU models were trained on seed 1) is put under
random similarities; the recovered similarity must map the head's known 68 landmarks to within a
few mm of where the true one maps them (mm on the model's scale, 250 per nphm unit).
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial.transform import Rotation

from nphm.fitting.alignment import MM_PER_NPHM, UNIT_TO_NPHM, Similarity, rotation_angle_deg
from nphm.fitting.auto_pose import AutoPoseSettings, auto_pose, start_rotations
from nphm.fitting.custom import mean_head_target
from support.toy_models import AnalyticHeadIdentity, toy_surface_samples

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def shipped():
    """The shipped CPU identity model and its mean head's surface (nphm frame)."""
    from nphm.fitting import io as fio

    cfg = fio.load_fitting_config(ROOT / "configs" / "fitting_nphm_cpu.yaml")
    models = fio.load_models(cfg, "cpu", ROOT / "pretrained" / "synthetic_cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before the tests' single_thread
    try:
        return models.identity, mean_head_target(models.identity, resolution=64)
    finally:
        torch.set_num_threads(threads)


def held_out_head(subject: int = 0, expression: int = 1, n: int = 20_000):
    """Surface samples of a held-out synthetic scan (noisy, open at the neck) and the 68
    landmarks of its registration, both (., 3) nphm frame."""
    from nphm.data.synthetic.landmarks import get_metadata
    from nphm.data.synthetic.subject import SyntheticSubject

    head = SyntheticSubject(subject, seed=0)
    points, _ = trimesh.sample.sample_surface(head.scan(expression), n, seed=subject)
    landmarks = np.asarray(head.registration(expression).vertices)[get_metadata().landmark_indices_68]
    return points, landmarks


@pytest.fixture(scope="module")
def head():
    return held_out_head()


def pose(kind: str, rng: np.random.Generator):
    """A random similarity input -> nphm: ``kind`` "upright" (any turn about the vertical, up to
    40 degrees about the others), "lying" (on the back, front or a side), "upside_down" or
    "any"; a random unit, a size factor in [0.5, 2] and a translation."""
    turn = Rotation.from_euler("y", rng.uniform(-180, 180), degrees=True)
    tilt = Rotation.from_euler("xz", rng.uniform(-40, 40, size=2), degrees=True)
    if kind == "upright":
        R = tilt * turn
    elif kind == "lying":
        on_back_or_front = Rotation.from_euler("x", rng.choice([-90.0, 90.0]), degrees=True)
        roll = Rotation.from_euler("z", rng.uniform(-30, 30), degrees=True)
        R = Rotation.from_euler("y", rng.uniform(-180, 180), degrees=True) * on_back_or_front * roll * turn
    elif kind == "upside_down":
        R = Rotation.from_euler("z", 180.0, degrees=True) * tilt * turn
    else:
        R = Rotation.random(random_state=int(rng.integers(1 << 30)))
    unit = str(rng.choice(["mm", "cm", "m"]))
    factor = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    # input = the head in `unit`, scaled by `factor`, rotated and moved; Similarity maps input -> nphm
    in_to_nphm = R.inv().as_matrix()
    t = rng.normal(size=3) * 0.3
    return Similarity(UNIT_TO_NPHM[unit] / factor, in_to_nphm, t), unit, factor


def landmark_errors_mm(found: Similarity, true: Similarity, landmarks_nphm: np.ndarray) -> np.ndarray:
    """Distances (mm at the model's scale) between the landmarks mapped by the recovered and by
    the true transform (the input's landmarks are ``true.invert(landmarks_nphm)``)."""
    lm_in = true.invert(landmarks_nphm)
    return MM_PER_NPHM * np.linalg.norm(found.apply(lm_in) - true.apply(lm_in), axis=1)


def _check_case(shipped, points, landmarks, kind, seed, unit_known=False):
    identity, reference = shipped
    true, unit, factor = pose(kind, np.random.default_rng(seed))
    result = auto_pose(true.invert(points), reference, identity, unit=unit if unit_known else None)
    err = landmark_errors_mm(result.transform, true, landmarks)
    info = (f"{kind} seed {seed} unit {unit} x {factor:.2f}: landmarks {err.mean():.2f} mm mean, {err.max():.2f} max; "
            f"{result.summary()}")
    return result, err, info


@pytest.mark.parametrize("kind, seed, unit_known",
                         [("upright", 1, False), ("lying", 2, True), ("upside_down", 3, False)])
def test_pose_of_held_out_head_from_any_orientation(shipped, head, kind, seed, unit_known):
    points, landmarks = head
    result, err, info = _check_case(shipped, points, landmarks, kind, seed, unit_known)
    assert err.mean() < 4.0 and err.max() < 8.0, info
    assert result.confident and result.margin > 0.3 and result.residual_mm < 2.0, info
    assert result.scored_by == "model"
    # the unit: guessed from the scale, or the given one with the head's size relative to the mean
    _, unit, factor = pose(kind, np.random.default_rng(seed))
    assert result.unit == unit and abs(result.size_factor * factor - 1.0) < 0.06, info
    # the candidates are ranked and distinct; the record is JSON-ready
    losses = [c.loss for c in result.candidates]
    assert losses == sorted(losses) and len(losses) >= 2
    record = json.loads(json.dumps(result.to_dict()))
    assert record["candidates"][0]["loss"] == losses[0] and record["confident"] is True


@pytest.mark.slow
@pytest.mark.parametrize("subject", [0, 3])
def test_pose_sweep_over_orientations_units_and_sizes(shipped, subject, capsys):
    """3 random poses of each kind (upright, lying, upside down, any), each of the full scan and
    of its front half (z > 0), the unit given in every other one: 24 poses, all found within a
    few mm, and confidently."""
    points, landmarks = held_out_head(subject)
    frontal = points[points[:, 2] > 0.0]
    errors, worst, seconds, failures = [], [], [], []
    for i, kind in enumerate(["upright", "lying", "upside_down", "any"] * 3):
        for name, scan in (("full", points), ("frontal", frontal)):
            result, err, info = _check_case(shipped, scan, landmarks, kind, 100 * subject + i, unit_known=i % 2 == 1)
            errors.append(err.mean())
            worst.append(err.max())
            seconds.append(result.seconds)
            if not (err.mean() < 4.0 and err.max() < 8.0 and result.confident):
                failures.append(f"{name} {info}")
    with capsys.disabled():
        print(f"\nsubject {subject}: {len(errors) - len(failures)} of {len(errors)} poses found; landmark error "
              f"mean {np.mean(errors):.2f} mm, median {np.median(errors):.2f}, worst pose {np.max(errors):.2f}, worst "
              f"landmark {np.max(worst):.2f}; "
              f"{np.mean(seconds):.1f} s per alignment")
    assert not failures, "\n".join(failures)


# --------------------------------------------------------------------------- without a model
def toy_head(n=3000, seed=0) -> np.ndarray:
    idm = AnalyticHeadIdentity()
    return toy_surface_samples(idm.params(torch.zeros(4)), n, torch.Generator().manual_seed(seed)).double().numpy()


@pytest.fixture(scope="module")
def toy_reference():
    return mean_head_target(AnalyticHeadIdentity(), resolution=48, n=8000)


@pytest.mark.parametrize("with_model", [False, True])
def test_toy_head_pose_with_and_without_a_model(toy_reference, with_model):
    true = Similarity(0.004 * 1.3, Rotation.from_rotvec([2.0, -1.0, 0.7]).as_matrix(), np.array([0.5, -0.2, 1.0]))
    scan = true.invert(toy_head())
    settings = AutoPoseSettings(model_steps=10, model_points=300)
    result = auto_pose(scan, toy_reference, AnalyticHeadIdentity() if with_model else None, settings=settings)
    assert result.scored_by == ("model" if with_model else "icp")
    assert rotation_angle_deg(result.transform.rotation, true.rotation) < 3.0
    assert abs(result.transform.scale / true.scale - 1.0) < 0.03
    assert result.unit == "mm" and result.confident, result.summary()


def test_scale_near_a_unit_is_snapped_to_it(toy_reference):
    """Without a declared unit, a head 10 % larger than the mean in mm is taken in mm at its real
    size: the pose keeps the unit's scale exactly; without snapping the scale follows the mean head."""
    true = Similarity(0.004 * 1.1, Rotation.from_rotvec([0.3, -1.2, 0.2]).as_matrix(), np.array([0.1, 0.2, -0.3]))
    scan = true.invert(toy_head())  # the toy head 1 / 1.1 the mean head's size at scale 0.004
    settings = AutoPoseSettings(model_steps=10, model_points=300, final_steps=10)
    free = auto_pose(scan, toy_reference, AnalyticHeadIdentity(), settings=settings)
    snapped = auto_pose(scan, toy_reference, AnalyticHeadIdentity(), settings=settings, snap_to_unit=True)
    assert not free.unit_guessed and abs(free.transform.scale / true.scale - 1.0) < 0.03
    assert snapped.unit_guessed and snapped.unit == "mm" and snapped.size_factor == 1.0
    assert snapped.transform.scale == 0.004
    assert rotation_angle_deg(snapped.transform.rotation, true.rotation) < 3.0
    assert "scale of unit mm" in snapped.candidates[0].start
    far = Similarity(0.004 * 1.5, true.rotation, true.translation).invert(toy_head())
    assert not auto_pose(far, toy_reference, AnalyticHeadIdentity(), settings=settings, snap_to_unit=True).unit_guessed


def test_symmetric_blob_is_not_confident():
    """A sphere fits in every orientation: the margin between distinct poses is ~0."""
    from nphm.fitting.alignment import Target

    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.35)
    pts, faces = trimesh.sample.sample_surface(sphere, 6000, seed=0)
    scan, _ = trimesh.sample.sample_surface(sphere, 3000, seed=1)
    result = auto_pose(scan * 250.0, Target(pts, sphere.face_normals[faces]), unit="mm")
    assert result.margin < 0.05 and not result.confident, result.summary()
    assert "NOT confident" in result.summary()


def test_start_rotations_cover_every_orientation():
    rng = np.random.default_rng(0)
    src, ref = rng.normal(size=(200, 3)) * [3, 2, 1], rng.normal(size=(200, 3)) * [1, 2, 3]
    starts = start_rotations(src, ref)
    assert len(starts) == 84 and all(abs(np.linalg.det(R) - 1.0) < 1e-9 for _, R in starts)
    for R in Rotation.random(50, random_state=1).as_matrix():
        assert min(rotation_angle_deg(R, S) for _, S in starts) < 45.0


def test_bad_input():
    with pytest.raises(ValueError, match="unknown unit"):
        auto_pose(toy_head(50), mean_head_target(AnalyticHeadIdentity(), resolution=32, n=500), unit="inch")


@pytest.mark.parametrize("keep_unit_scale", [True, False])
def test_final_refinement_fits_the_upper_head_at_the_units_scale(toy_reference, monkeypatch, keep_unit_scale):
    """At the unit's scale the final model refinement sees only the points its start puts above
    ``final_min_y`` (what expressions do not move); with a free scale, all of them."""
    import nphm.fitting.auto_pose as ap

    seen = []
    real = ap._model_refine
    monkeypatch.setattr(ap, "_model_refine",
                        lambda identity, pts, starts, *a, **k: seen.append((pts, starts)) or real(identity, pts, starts, *a, **k))
    true = Similarity(0.004, Rotation.from_rotvec([0.2, 2.5, -0.1]).as_matrix(), np.array([0.3, 0.1, -0.2]))
    scan = true.invert(toy_head())
    settings = AutoPoseSettings(model_steps=5, model_points=100, final_steps=5, final_points=10_000, final_min_y=0.0)
    auto_pose(scan, toy_reference, AnalyticHeadIdentity(), unit="mm", keep_unit_scale=keep_unit_scale,
              settings=settings)
    pts, (start,) = seen[-1]  # the final refinement: one start
    upper = scan[start.apply(scan)[:, 1] > 0.0]
    assert 100 <= len(upper) < len(scan)
    expected = upper if keep_unit_scale else scan
    assert len(pts) == len(expected) and np.array_equal(pts, expected)
    assert (start.apply(pts)[:, 1] > 0.0).all() == keep_unit_scale
