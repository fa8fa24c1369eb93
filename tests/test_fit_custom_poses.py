"""fit_custom end to end on a held-out head put under random similarities (issue: fit a real
person's scan in any frame).

The shipped CPU models (the demo's) fit one scan of a head they never saw, given (a) in the nphm frame with
``--alignment none`` (the reference fit) and (b) rotated about the vertical by any angle, up to
40 degrees about the other axes, scaled by 0.5-2 in mm / cm / m and moved, aligned by 68, 51 or
39 landmarks or automatically. After the fit (pose refined with the latents), the head's 68
landmarks mapped by the written transform must lie within 2 mm of where the true similarity puts
them, and the face Chamfer-L1 against the true scan must be within 0.1 mm of the reference fit's.
Distances in mm at the model's scale (250 mm per nphm unit).

Known failure (xfail): both alignments bring the head to the mean head's size (landmarks by
Umeyama to the mean landmarks, the automatic one by ICP to the mean head), and the pose refined
in the fit does not recover the head's own size: the held-out ICT head here is 5 % larger than
the mean, which leaves 3.7 mm mean landmark error and a face Chamfer-L1 of 1.6 mm against 0.8 mm
in the nphm frame, with 51 landmarks and without.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import trimesh

from nphm import paths
from nphm.fitting.alignment import MM_PER_NPHM, Similarity
from nphm.fitting.report import closest_on_mesh, near_mask
from test_auto_pose import pose

ROOT = Path(__file__).resolve().parents[1]
MODELS = paths.PRETRAINED  # the default (demo) models
CFG = ROOT / "configs" / "fitting_nphm_cpu.yaml"
STEPS = 150
RESOLUTION = 96
#: face region of the metric: true-scan points within this distance (nphm, 15 mm) of the
#: registration's frontal landmarks (rows 17-67: brows, nose, eyes, mouth)
FACE_RADIUS = 0.06

pytestmark = pytest.mark.usefixtures("single_thread")


def held_out(models_dir: Path = MODELS, subject: int = 0, expression: int = 1, n: int = 20_000):
    """(scan mesh, 20k surface samples, (68, 3) landmarks, (39, 3) anchors) of a head the models
    never saw: of their training set's source (procedural or ICT), another seed, nphm frame."""
    from nphm.data.synthetic import get_source

    synthetic = json.loads((models_dir / "training_dataset.json").read_text())["synthetic"]
    source = get_source(synthetic.get("source", "procedural"))
    head = source.subject(subject, int(synthetic["seed"]) + 1000)
    scan = head.scan(expression)
    points, _ = trimesh.sample.sample_surface(scan, n, seed=subject)
    reg = np.asarray(head.registration(expression).vertices)
    meta = source.metadata()
    return scan, points, reg[meta.landmark_indices_68], reg[meta.anchor_indices]


@pytest.fixture(scope="module")
def head():
    return held_out()


def run_fit(out: Path, points: np.ndarray, *args) -> dict:
    """fit_custom on ``points`` (saved as .npy); returns the written fitting.json."""
    from nphm.cli import fit_custom

    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "scan.npy", points)
    argv = ["--points", out / "scan.npy", "--cfg_file", CFG, "--experiment_dir", MODELS, "--device", "cpu",
            "--steps", STEPS, "--resolution", RESOLUTION, "--out", out / "fit", *args]
    assert fit_custom.main([str(a) for a in argv]) == 0
    return json.loads((out / "fit" / "fitting.json").read_text())


def face_chamfer_mm(fit_nphm: trimesh.Trimesh, scan: trimesh.Trimesh, face_points: np.ndarray) -> float:
    """Chamfer-L1 (mm) on the face: mean of scan face points -> fit and fit vertices near the
    face -> scan, nphm frame."""
    d_scan, _ = closest_on_mesh(face_points, fit_nphm)
    vertices = np.asarray(fit_nphm.vertices)
    near = vertices[near_mask(vertices, face_points, 0.008)]
    d_fit, _ = closest_on_mesh(near, scan)
    return 0.5 * MM_PER_NPHM * (d_scan.mean() + d_fit.mean())


@pytest.fixture(scope="module")
def reference_fit(head, tmp_path_factory):
    """The fit of the head given in the nphm frame (no alignment) and its face Chamfer-L1."""
    scan, points, lm68, _ = head
    out = tmp_path_factory.mktemp("nphm_frame")
    run_fit(out, points, "--alignment", "none")
    face = points[near_mask(points, lm68[17:], FACE_RADIUS)]
    fit = trimesh.load(str(out / "fit" / "scan_nphm.ply"), process=False)
    return face, face_chamfer_mm(fit, scan, face)


def check_posed_fit(head, reference_fit, tmp_path, landmarks: str, seed: int):
    scan, points, lm68, anchors = head
    face, reference_cl1 = reference_fit
    true, unit, factor = pose("upright", np.random.default_rng(seed))
    args = ["--units", unit]
    if landmarks != "auto":
        given = {"68": lm68, "51": lm68[17:], "39": anchors}[landmarks]
        np.save(tmp_path / "landmarks.npy", true.invert(given))
        args += ["--landmarks", tmp_path / "landmarks.npy", "--landmark_format", landmarks]
    else:
        args += ["--alignment", "auto"]
    report = run_fit(tmp_path, true.invert(points), *args)
    found = Similarity.from_dict(report["transforms_input_to_nphm"]["scan"])
    lm_in = true.invert(lm68)
    err = MM_PER_NPHM * np.linalg.norm(found.apply(lm_in) - lm68, axis=1)
    fit = trimesh.load(str(tmp_path / "fit" / "scan_nphm.ply"), process=False)
    cl1 = face_chamfer_mm(fit, scan, face)
    info = (f"{landmarks} seed {seed} ({unit} x {factor:.2f}): landmarks {err.mean():.2f} mm mean "
            f"{err.max():.2f} max; face CL1 {cl1:.3f} mm vs {reference_cl1:.3f} in the nphm frame")
    assert err.mean() <= 2.0, info
    assert abs(cl1 - reference_cl1) <= 0.1, info
    face_stats = report["per_scan"]["scan"]["distances_mm"]["face"]
    assert face_stats["median"] < 1.0, (face_stats, info)
    return info


SIZE_XFAIL = pytest.mark.xfail(reason="the alignment normalises the head's size to the mean head's and "
                                      "the fit does not recover it (see the module docstring)")


@pytest.mark.slow
@SIZE_XFAIL
@pytest.mark.parametrize("landmarks", ["68", "51", "39", "auto"])
@pytest.mark.parametrize("seed", [21, 22, 23])
def test_posed_scan_sweep(head, reference_fit, tmp_path, landmarks, seed):
    print(check_posed_fit(head, reference_fit, tmp_path, landmarks, seed))
